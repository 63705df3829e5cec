-- Reading one workload's graph in row-id order, in chunks (store/query.rs).
--
-- The UNIQUE keys of nodes and edges start with workload_id, but they order rows by kind and label
-- (or by the edge's upsert key), so a reader that pages through a workload by row id would sort the
-- workload's remaining rows for every page. An index on workload_id alone is ordered by (workload_id,
-- rowid): each page is a range of it, and the table rows it points to are visited in insertion order,
-- which is mostly file order. Only inserts maintain it: an upsert that updates counts and times does
-- not touch these columns.
CREATE INDEX nodes_by_workload ON nodes (workload_id);
CREATE INDEX edges_by_workload ON edges (workload_id);
