//! herdsman-core (work in progress).
