-- Enforcement: the mode each workload's domains are in, the policies loaded for them, and the
-- deny / would-deny events the kernel reported.
--
-- Conventions as in 0001: unix nanoseconds, STRICT tables, kinds as lowercase text validated by the
-- reader, 64-bit kernel values stored bit-for-bit.

-- The mode of each domain of a workload, as last set with `stance mode`. A missing row means observe.
-- A restarted daemon re-applies every workload that has a row in audit or enforce.
CREATE TABLE workload_modes (
    workload_id INTEGER NOT NULL REFERENCES workloads (id),
    -- process, file, network, capabilities (enforce::Domain)
    domain      TEXT    NOT NULL,
    -- observe, audit, enforce (enforce::Mode)
    mode        TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (workload_id, domain)
) STRICT;

-- Every policy that was loaded into the kernel, newest last. The live one of a workload is its latest
-- row; older rows are the history. A restart re-applies the stored body rather than recompiling it,
-- so what is enforced never widens silently with whatever was observed in the meantime.
-- `revision` is the enforcer's number for the load; it is not unique across daemon restarts that lost
-- the pinned maps (a reboot), so rows are ordered by id.
CREATE TABLE policies (
    id          INTEGER PRIMARY KEY,
    workload_id INTEGER NOT NULL REFERENCES workloads (id),
    revision    INTEGER NOT NULL,
    -- where the rules came from: 'graph' (compiled from the behaviour graph); later the recommender
    source      TEXT    NOT NULL,
    -- enforce::Policy as JSON (Stance's native policy format)
    body_json   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX policies_by_workload ON policies (workload_id, id);

-- One row per deny or would-deny the kernel reported. Rows are only added; `stance events` reads
-- them newest first, per workload or across all.
CREATE TABLE enforcement_events (
    id          INTEGER PRIMARY KEY,
    workload_id INTEGER NOT NULL REFERENCES workloads (id),
    at          INTEGER NOT NULL,
    domain      TEXT    NOT NULL,
    -- 'deny' (enforce: the action failed with EPERM) or 'would-deny' (audit: it was allowed)
    kind        TEXT    NOT NULL,
    -- path, binary, address (a.b.c.d:port/proto, unix:PATH) or capability name
    object      TEXT    NOT NULL,
    -- the acting executable
    actor       TEXT    NOT NULL,
    -- process id (the kernel's tgid) and thread id
    pid         INTEGER NOT NULL,
    tid         INTEGER NOT NULL,
    cgroup_id   INTEGER NOT NULL,
    -- the object's path could not be resolved in full (denied in enforce, never allowed)
    truncated   INTEGER NOT NULL,
    -- a datagram sent without connect (network only)
    send        INTEGER NOT NULL
) STRICT;

CREATE INDEX enforcement_events_by_workload ON enforcement_events (workload_id, at);
CREATE INDEX enforcement_events_by_time ON enforcement_events (at);
