//! From reports to events (being built).
