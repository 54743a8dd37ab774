"""The compact record layout: one string per (entity, view) holding its event time and features."""
