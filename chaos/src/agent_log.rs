//! The agents' append-only logs: one line per record, flushed at once, so that the run
//! (reading them from this machine) never misses what an agent has done.

use anyhow::Context;
use std::io::Write;
use std::path::Path;

pub struct AgentLog(std::fs::File);

impl AgentLog {
    pub fn open(path: &Path) -> anyhow::Result<AgentLog> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(AgentLog)
            .with_context(|| format!("opening {}", path.display()))
    }

    pub fn line(&mut self, text: String) -> anyhow::Result<()> {
        self.0.write_all(format!("{text}\n").as_bytes())?;
        Ok(self.0.flush()?)
    }
}
