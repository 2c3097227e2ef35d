"""The eval stage: tasks, scoring with the shared context run once, reports."""
