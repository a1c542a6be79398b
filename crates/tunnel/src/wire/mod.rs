//! Packet views and checksums (filled in by the offload work).
