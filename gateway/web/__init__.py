"""The pickup pages: enrolment, opening a pickup notice, acknowledging (docs/architecture.md §1)."""
