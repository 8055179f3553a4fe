-- 017_thresholds_children: `current_thresholds` gives source 'children' to a label its own fit judged
-- absent whose positive tags come from its children (a parent raised only by them; positives beyond
-- those a person accepted), as `tagger runs show` reads it: the query for labels judged absent
-- (NOT present AND source = 'fit') no longer lists a parent tagged on its children's images.
-- run_thresholds keeps each fit's own decision as it was.

CREATE OR REPLACE VIEW current_thresholds AS
WITH people AS (
    SELECT t.label, count(*) AS n
    FROM tags AS t JOIN current_run AS c ON t.run_id = c.run_id
    WHERE t.positive AND t.provenance = 'person'
    GROUP BY t.label)
SELECT r.label, r.threshold, r.present,
       CASE WHEN r.source = 'fit' AND NOT r.present AND coalesce(n.n_pos, 0) > coalesce(p.n, 0)
            THEN 'children' ELSE r.source END AS source
FROM run_thresholds AS r
JOIN current_run AS c ON r.run_id = c.run_id
LEFT JOIN run_label_counts AS n ON n.run_id = r.run_id AND n.label = r.label
LEFT JOIN people AS p ON p.label = r.label;
