-- Which batch last changed each part of a workload's behaviour graph, so that a reader holding the
-- graph can bring it up to date by reading only what changed.
--
-- workloads.graph_changes counts the committed batches that touched the workload (its row, cgroups,
-- nodes, edges or losses): the writer adds one whenever a batch mentions it. A node or edge that a
-- batch inserts or updates takes that batch's number in `changed`. A reader that read the graph when
-- graph_changes was N finds, with one indexed row, whether it is still current, and otherwise what to
-- re-read: the nodes and edges whose `changed` is above N (rows are never deleted, and an upsert only
-- changes counts, times and executable details, never a row's kind, label or ends).
ALTER TABLE workloads ADD COLUMN graph_changes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
