-- The behaviour graph: what each workload did, aggregated per distinct edge.
--
-- Times are unix nanoseconds, except losses.bucket (unix seconds, see there). Tables are STRICT so a
-- bug that binds the wrong type fails loudly instead of storing text where a number belongs. Kinds
-- are stored as the lowercase text of the model's enums (model.rs `as_str`) without CHECK
-- constraints: SQLite cannot alter a CHECK without rebuilding the table, and new edge or node kinds
-- are expected; the reader validates instead.
--
-- 64-bit unsigned kernel values (cgroup ids, dev, ino) are stored bit-for-bit as signed INTEGER.

-- One row per workload name. Identity columns are those of the latest observation: a name can be
-- reused (a container recreated under the same name gets a new id).
CREATE TABLE workloads (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    kind         TEXT    NOT NULL,
    runtime      TEXT,
    container_id TEXT,
    unit         TEXT,
    pod_uid      TEXT,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL
) STRICT;

-- Which workload a kernel cgroup id belongs to. Some kernels reuse a cgroup id after rmdir, so the
-- row is the latest mapping, not a history.
CREATE TABLE cgroups (
    cgroup_id   INTEGER PRIMARY KEY,
    path        TEXT    NOT NULL,
    workload_id INTEGER NOT NULL REFERENCES workloads (id),
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
) STRICT;

CREATE INDEX cgroups_by_workload ON cgroups (workload_id);

-- Nodes belong to one workload: the same file seen by two workloads is two nodes, so each workload's
-- graph (and the policy derived from it) stands alone. Every workload has one node of kind
-- 'workload' labelled with its name. The exe_* columns are only set on executable nodes.
CREATE TABLE nodes (
    id          INTEGER PRIMARY KEY,
    workload_id INTEGER NOT NULL REFERENCES workloads (id),
    kind        TEXT    NOT NULL,
    label       TEXT    NOT NULL,
    exe_dev     INTEGER,
    exe_ino     INTEGER,
    exe_memfd   INTEGER,
    exe_argv    TEXT,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    -- also the index that graph queries use (workload_id prefix)
    UNIQUE (workload_id, kind, label)
) STRICT;

-- One row per distinct (workload, kind, source, target, access, result); count and times aggregate
-- every observation of it.
CREATE TABLE edges (
    id          INTEGER PRIMARY KEY,
    workload_id INTEGER NOT NULL REFERENCES workloads (id),
    kind        TEXT    NOT NULL,
    source_id   INTEGER NOT NULL REFERENCES nodes (id),
    target_id   INTEGER NOT NULL REFERENCES nodes (id),
    access      TEXT    NOT NULL,
    result      TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    -- the upsert key, and the index that per-workload graph queries use (workload_id prefix)
    UNIQUE (workload_id, kind, source_id, target_id, access, result)
) STRICT;

-- Looking up what touched a given node (e.g. which executables open a file) without a scan.
CREATE INDEX edges_by_target ON edges (target_id);

-- Lost observations per workload, reason and minute. workload_id 0 means "not attributable to a
-- workload": SQLite treats NULLs in a UNIQUE key as distinct, so NULL would never merge. That is also
-- why this column has no foreign key.
CREATE TABLE losses (
    workload_id INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    -- start of the minute, unix seconds
    bucket      INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    UNIQUE (workload_id, reason, bucket)
) STRICT;
