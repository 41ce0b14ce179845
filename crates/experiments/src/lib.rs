//! The paper's figure pipelines: sweeps, run ids, resume, results, reports
