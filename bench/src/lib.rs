//! cellar's benchmarks: each measures a cellar component beside the raw speed of the same
//! hardware in the same run, so that figures on a shared, drifting machine compare as
//! ratios. Driven by `cellar bench ...`.

pub mod blocks;
pub mod disk;
pub mod disk_open;
pub mod encode;
pub mod http1;
pub mod master;
pub mod namespace;
pub mod process;
pub mod report;
