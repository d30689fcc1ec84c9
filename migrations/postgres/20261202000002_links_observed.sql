-- The customers a run that follows a converged one plans: those with a link observed changed.
CREATE INDEX links_observed ON links(customer_id) WHERE observed IS NOT NULL;
