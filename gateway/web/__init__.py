"""The pickup pages: enrolment, opening a pickup notice, acknowledging (docs/architecture.md
§9, docs/protocol.md §17)."""
