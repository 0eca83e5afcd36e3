//! Storage implementations of the actors' store traits.

pub mod rocks;
