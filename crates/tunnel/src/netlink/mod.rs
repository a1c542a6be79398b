//! rtnetlink client (being written).
