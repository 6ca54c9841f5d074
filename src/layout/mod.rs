//! Disk layout: the partition table and where each filesystem goes.

pub mod gpt;
