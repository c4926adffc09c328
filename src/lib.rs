//! beian-gateway: hands reviewed ICP filings to the provincial Communications Administrations
//! over the MIIT enterprise interface V3.0 (see ../shared/bureau-protocol.md).
pub mod bureau;
pub mod codes;
pub mod datafile;
pub mod domain;
pub mod package;
