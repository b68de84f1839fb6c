-- Every console page of the support desk lists the operators (assignment, the queue's
-- assignee filter): read from a small index instead of scanning every user.
CREATE INDEX users_operators_idx ON users (display_name, id) WHERE is_operator;
