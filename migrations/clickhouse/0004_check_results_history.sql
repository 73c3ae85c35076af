-- The history written before 0003, into the rebuilt check_results: parts are hard-linked,
-- not copied through memory, so this takes seconds on a large table. Rows a merge had not
-- folded yet are all brought over, so the new precedence picks among them; a row the old
-- engine had already replaced is gone for good. A rerun attaches the parts again: the copies
-- equal the rows they repeat and fold into them (FINAL reads one, the next merge drops it).
ALTER TABLE check_results ATTACH PARTITION ALL FROM check_results_before_0003
