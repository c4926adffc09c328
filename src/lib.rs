//! beian-gateway: hands reviewed ICP filings to the provincial Communications Administrations
//! over the MIIT enterprise interface V3.0 (see ../shared/bureau-protocol.md).
pub mod admin;
pub mod attachments;
pub mod bench;
pub mod bureau;
pub mod calendar;
pub mod codes;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod datafile;
pub mod domain;
pub mod http;
pub mod package;
pub mod pipeline;
pub mod preflight;
pub mod provinces;
pub mod store;
pub mod telemetry;
