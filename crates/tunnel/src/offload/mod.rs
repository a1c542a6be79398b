//! GSO split and GRO coalesce (filled in by the offload work).
