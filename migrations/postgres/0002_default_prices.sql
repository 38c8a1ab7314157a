-- DeepSeek's published V4 prices per 1M tokens (USD), in micro-units, for every mode; output
-- reasoning and answer tokens cost the same. Effective from 2026-01-01T00:00:00Z.
INSERT INTO prices (model, mode, token_class, effective_ms, micros_per_million, currency)
SELECT m.model, d.mode, c.token_class, 1767225600000,
       CASE c.token_class
           WHEN 'input_cache_hit' THEN m.hit
           WHEN 'input_cache_miss' THEN m.miss
           ELSE m.output
       END,
       'USD'
FROM (SELECT 'deepseek-v4-flash' AS model, 2800 AS hit, 140000 AS miss, 280000 AS output
      UNION ALL SELECT 'deepseek-v4-pro', 14500, 1740000, 3480000) AS m
CROSS JOIN (SELECT 'non-think' AS mode UNION ALL SELECT 'think-high' UNION ALL SELECT 'think-max') AS d
CROSS JOIN (SELECT 'input_cache_hit' AS token_class UNION ALL SELECT 'input_cache_miss'
            UNION ALL SELECT 'output_reasoning' UNION ALL SELECT 'output_answer') AS c;
