//! Integration harness
