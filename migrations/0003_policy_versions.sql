-- Recommendation: the versions of each workload's recommended policy, and the rules a person
-- adopted from deny / would-deny events.
--
-- Conventions as in 0001: unix nanoseconds, STRICT tables, kinds as lowercase text validated by the
-- reader.

-- Every recommended policy, one row per version; versions count from 1 per workload. A new version
-- is written only when the policy differs from the latest, so the list is the history of behaviour
-- changes and adopted additions. Rows are only added.
CREATE TABLE policy_versions (
    id            INTEGER PRIMARY KEY,
    workload_id   INTEGER NOT NULL REFERENCES workloads (id),
    version       INTEGER NOT NULL,
    -- 'recommend' (collapsed from the behaviour graph) or 'accept' (a proposed addition adopted)
    origin        TEXT    NOT NULL,
    -- enforce::Policy as JSON (Stance's native policy format)
    body_json     TEXT    NOT NULL,
    -- the rules' evidence and breadth when the version was made (recommend::RuleInfo list, JSON)
    evidence_json TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (workload_id, version)
) STRICT;

-- Rules adopted with `stance policy accept`: kept apart from the graph so every later
-- recommendation carries them (a denied action leaves no allowed edge in the graph to learn from).
CREATE TABLE accepted_rules (
    workload_id INTEGER NOT NULL REFERENCES workloads (id),
    -- recommend::Rule id (a hash of the rule's text)
    rule_id     TEXT    NOT NULL,
    -- recommend::Rule as JSON
    rule_json   TEXT    NOT NULL,
    -- the version the rule was first adopted into
    version     INTEGER NOT NULL,
    accepted_at INTEGER NOT NULL,
    PRIMARY KEY (workload_id, rule_id)
) STRICT;

-- Which recommended version a loaded policy is (NULL for source 'graph').
ALTER TABLE policies ADD COLUMN version INTEGER;
