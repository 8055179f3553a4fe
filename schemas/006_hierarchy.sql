-- 006_hierarchy: label hierarchies. A label may have several parents (no cycles: the catalog refuses
-- an edge that would close one). A tag run makes every active ancestor of a positive label positive
-- and raises its score and confidence to the max of its descendants'.

-- One row per (child, parent) edge, by label name (labels are never deleted or renamed).
CREATE TABLE label_parents (
    child    VARCHAR NOT NULL,
    parent   VARCHAR NOT NULL,
    added_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (child, parent),
    CHECK (child <> parent)
);

-- Every (label, ancestor) pair of the hierarchy, retired labels included, with the length of the
-- shortest path between them (1: a parent, 2: a grandparent, ...).
CREATE VIEW label_ancestors AS
WITH RECURSIVE up (label, ancestor, depth) AS (
    SELECT child, parent, 1 FROM label_parents
    UNION
    SELECT u.label, p.parent, u.depth + 1
    FROM up AS u JOIN label_parents AS p ON p.child = u.ancestor
    WHERE u.depth < 64
)
SELECT label, ancestor, min(depth) AS depth FROM up GROUP BY label, ancestor;

-- The current run's tags, one row per tag as in current_tags, with the tag label's active
-- ancestors (nearest first; an empty list for a label without any).
CREATE VIEW current_tags_with_ancestors AS
SELECT t.run_id, t.image_id, t.uri, t.label, t.score, t.confidence, t.rank, t.positive,
       coalesce(a.ancestors, []::VARCHAR[]) AS ancestors
FROM current_tags AS t
LEFT JOIN (
    SELECT la.label, list(la.ancestor ORDER BY la.depth, la.ancestor) AS ancestors
    FROM label_ancestors AS la
    JOIN labels AS l ON l.name = la.ancestor AND l.retired_at IS NULL
    GROUP BY la.label
) AS a ON a.label = t.label;
