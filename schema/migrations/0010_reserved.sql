-- 0010_reserved: a placeholder that keeps migration versions gapless on
-- this branch. Version 0010 belongs to another change; when both are
-- merged, delete this file (the migrator refuses two files of one version).
SELECT 1;
