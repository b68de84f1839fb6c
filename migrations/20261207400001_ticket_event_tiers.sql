-- The support tier in force, as it was when a ticket was opened or its plan (or the
-- plan's tier) changed: the SLA clock reads history with the tiers of then, so editing a
-- tier changes due times from the edit on, never the time already counted. NULL on
-- events written before (the clock falls back to the plan's tier as it is now).
ALTER TABLE ticket_events ADD COLUMN tier jsonb;
