//! One integration-test binary for the whole project (ripgrep's habit): each
//! module covers one part, each test gets its own directory via `e2e!`.

mod bench;
mod contract;
mod descriptor_metadata;
mod differential;
mod docs;
mod entry_times;
mod examples;
mod hook_state;
mod host_safety;
mod install;
mod interpose;
mod isolation;
mod launchers;
mod libc_calls;
mod listings;
mod merge;
mod policy;
mod redirect_exact;
mod redirect_shared;
mod renamed_dir_fill;
mod review10;
mod review11;
mod review2;
mod review3;
mod review3_runner;
mod review4;
mod review6;
mod review7;
mod review8;
mod review9;
mod runner;
mod seccomp;
mod symbols;
mod verdicts;
mod view_renames;
