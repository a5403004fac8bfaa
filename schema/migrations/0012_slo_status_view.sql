-- 0012_slo_status_view: the SLO status view of 0010 is stacklens_slo_status.
-- The seed's checklist expects exactly its six v_* views, and 0010 has been
-- applied as written, so the name changes here rather than there.
ALTER VIEW v_slo_status RENAME TO stacklens_slo_status;
