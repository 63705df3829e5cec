//! probes (being written)
