"""What userapi knows about users: ids and profiles, the profile cache, accounts, the audit
log, idempotency records, seen events and the rules for stored JSON. Imports `platform` and
`adapters`, never the web framework's request handling."""
