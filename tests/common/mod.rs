//! Test code shared by several integration-test files. Each file that declares
//! `mod common;` uses only part of it.

#![allow(dead_code, unused_macros, unused_imports)]

pub mod behaviour;
