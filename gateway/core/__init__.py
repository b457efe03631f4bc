"""The pure rules: values, validators, matching, schedules and configuration."""
