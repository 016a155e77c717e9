-- The change history of every live ticket (who, when, action, from, to, comment), oldest first.
-- Params: none.
SELECT e.ticket_id, e.seq, e.at, e.actor, e.action, e.from_state, e.to_state, e.interval_key, e.comment
FROM quality.ticket_events AS e
JOIN quality.tickets AS t ON t.ticket_id = e.ticket_id
WHERE t.state <> 'resolved'
ORDER BY e.ticket_id, e.seq;
