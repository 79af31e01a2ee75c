//! The run's outcome: one JSON object (`--json`), or a table; and the timeline SVG.

use crate::api_proxy::Counts;
use crate::cli::RunArgs;
use crate::observe::{ClientPath, Workload};
use crate::setup::CLIENTS;
use crate::verify::{Lost, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub cycle: u32,
    pub old_master: String,
    pub new_master: String,
    /// Wall clock, ms.
    pub fault_at_ms: u64,
    /// From the fault: the failover decision committed (first attempt).
    pub detect_ms: u64,
    /// From the fault: the failover complete (new master writable, replicas repointed).
    pub failover_ms: u64,
    /// From the fault: the router saw every route table where the mode wants it (0:
    /// none had to move, as an anchored table whose AZ still has its host).
    pub routes_ms: u64,
    /// From the fault: the first write a client through the VIP had acknowledged again.
    pub unavailable_ms: u64,
    /// The same for the clients writing through their HAProxy (`/primary`).
    pub haproxy_unavailable_ms: u64,
    /// Journal entries (attempts) the failover took.
    pub attempts: usize,
    pub salvage: String,
    /// The old master came back with errant transactions and was rebuilt.
    pub errant: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Spread {
    /// Nearest-rank percentiles; zeros for no samples.
    pub fn of(mut xs: Vec<u64>) -> Spread {
        if xs.is_empty() {
            return Spread {
                p50: 0,
                p99: 0,
                max: 0,
            };
        }
        xs.sort_unstable();
        let rank = |p: f64| {
            let k = ((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
            xs[k - 1]
        };
        Spread {
            p50: rank(0.50),
            p99: rank(0.99),
            max: *xs.last().expect("not empty"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub vip: Spread,
    pub haproxy: Spread,
}

impl LatencyReport {
    /// Before each cycle's fault: the acknowledged INSERTs of the clients whose AZ is
    /// not the master's (client `c` writes from AZ `(c - 1) % CLIENTS`, db-N lives in
    /// AZ N - 1).
    fn before_faults(cycles: &[CycleReport], workload: &Workload) -> LatencyReport {
        let of = |path: ClientPath| {
            let mut xs = Vec::new();
            for c in cycles {
                let master_az = c
                    .old_master
                    .strip_prefix("db-")
                    .and_then(|n| n.parse::<usize>().ok())
                    .map(|n| n - 1);
                let from = c.fault_at_ms.saturating_sub(LATENCY_WINDOW_MS);
                xs.extend(
                    workload
                        .acks
                        .iter()
                        .filter(|a| path.has(a.client))
                        .filter(|a| Some((a.client as usize - 1) % CLIENTS) != master_az)
                        .filter(|a| a.at_ms >= from && a.at_ms < c.fault_at_ms)
                        .map(|a| a.latency_us),
                );
            }
            Spread::of(xs)
        };
        LatencyReport {
            vip: of(ClientPath::Vip),
            haproxy: of(ClientPath::Haproxy),
        }
    }
}

/// The stretch before each fault whose writes' latency is reported.
const LATENCY_WINDOW_MS: u64 = 5000;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub fault: String,
    /// The database server the hosts ran (`mysql-9.7`, `mariadb-10.11`, …).
    pub flavour: String,
    pub cycles: u32,
    pub failovers: usize,
    pub acked_writes: usize,
    pub lost_acked_writes: usize,
    pub consistent: bool,
    /// `route` or `anchored` (`--vip-mode`).
    pub vip_mode: String,
    /// At the end, every route table carries the VIP where the mode wants it: to the
    /// final master (route), or to its own AZ's database host (anchored).
    pub routes_as_wanted: bool,
    /// How long a client's INSERT took to be acknowledged, in the 5 s before each
    /// fault (the cluster whole), for the clients outside the master's AZ: through
    /// the VIP (anchored: one more hop, through their own AZ's database host) and
    /// through their HAProxy (straight to the master).
    pub write_latency_us: LatencyReport,
    pub unavailable_ms: Spread,
    pub haproxy_unavailable_ms: Spread,
    pub failover_ms: Spread,
    pub detect_ms: Spread,
    pub routes_ms: Spread,
    pub per_failover: Vec<CycleReport>,
    pub lost: Vec<Lost>,
    /// Read-backs by a client that saw less than its newest acknowledged row.
    pub missing_reads: usize,
    pub client_errors: usize,
    pub final_master: Option<String>,
    pub checksums: BTreeMap<String, (String, u64)>,
    pub ec2_api: Counts,
    pub duration_s: f64,
    pub out: String,
    /// What stopped the run early or made it unverifiable, if anything.
    pub error: Option<String>,
    #[serde(skip)]
    timeline: Timeline,
}

/// Per second since the start: acknowledged writes and client errors; the markers.
#[derive(Debug, Clone, Default)]
struct Timeline {
    acks: Vec<u32>,
    errors: Vec<u32>,
    /// (seconds since start, label, colour)
    marks: Vec<(f64, String, &'static str)>,
}

/// What one chaos run saw, from its start to the verification.
pub struct Observed {
    pub started_ms: u64,
    pub ended_ms: u64,
    pub cycles: Vec<CycleReport>,
    /// `None` when the verification could not run (see `error`).
    pub verdict: Option<Verdict>,
    pub error: Option<String>,
    pub ec2_api: Counts,
}

impl Report {
    pub fn new(args: &RunArgs, out: &Path, workload: &Workload, seen: Observed) -> Report {
        let Observed {
            started_ms,
            ended_ms,
            cycles,
            verdict,
            error,
            ec2_api,
        } = seen;
        let each = |f: fn(&CycleReport) -> u64| Spread::of(cycles.iter().map(f).collect());
        let (lost, consistent, routes_as_wanted, final_master, checksums) = match verdict {
            Some(v) => (
                v.lost,
                v.consistent,
                v.routes_as_wanted,
                Some(v.final_master),
                v.checksums,
            ),
            None => (Vec::new(), false, false, None, BTreeMap::new()),
        };
        let timeline = Timeline::new(started_ms, ended_ms, &cycles, workload);
        let write_latency_us = LatencyReport::before_faults(&cycles, workload);
        Report {
            fault: args.fault.name().to_string(),
            flavour: args.flavour.name().to_string(),
            cycles: args.cycles,
            failovers: cycles.len(),
            acked_writes: workload.acks.len(),
            lost_acked_writes: lost.len(),
            consistent,
            vip_mode: args.vip_mode.name().to_string(),
            routes_as_wanted,
            write_latency_us,
            unavailable_ms: each(|c| c.unavailable_ms),
            haproxy_unavailable_ms: each(|c| c.haproxy_unavailable_ms),
            failover_ms: each(|c| c.failover_ms),
            detect_ms: each(|c| c.detect_ms),
            routes_ms: each(|c| c.routes_ms),
            lost,
            missing_reads: workload.missing.len(),
            client_errors: workload.errors.len(),
            final_master,
            checksums,
            ec2_api,
            duration_s: (ended_ms.saturating_sub(started_ms)) as f64 / 1000.0,
            out: out.display().to_string(),
            error,
            per_failover: cycles,
            timeline,
        }
    }

    /// Every guarantee held: a failover per cycle, nothing acknowledged lost, the
    /// servers equal, no client read-back short, the VIP on the final master.
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.failovers == self.cycles as usize
            && self.lost_acked_writes == 0
            && self.missing_reads == 0
            && self.consistent
            && self.routes_as_wanted
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    pub fn table(&self) -> String {
        let s = |ms: u64| format!("{:.2} s", ms as f64 / 1000.0);
        let mut t = format!(
            "{:<6} {:<6} {:<6} {:>9} {:>9} {:>9} {:>12}  {}\n",
            "cycle",
            "old",
            "new",
            "detect",
            "failover",
            "routes",
            "unavailable",
            "salvage / rejoin"
        );
        for c in &self.per_failover {
            let rejoin = match &c.errant {
                Some(e) => format!("; rebuilt ({e})"),
                None => String::new(),
            };
            t.push_str(&format!(
                "{:<6} {:<6} {:<6} {:>9} {:>9} {:>9} {:>12}  {}{rejoin}\n",
                c.cycle,
                c.old_master,
                c.new_master,
                s(c.detect_ms),
                s(c.failover_ms),
                s(c.routes_ms),
                s(c.unavailable_ms),
                c.salvage,
            ));
        }
        let spread = |x: &Spread| format!("p50 {} / p99 {} / max {}", s(x.p50), s(x.p99), s(x.max));
        t.push_str(&format!(
            "\n{} on {}: {} of {} cycles failed over; {} writes acknowledged, {} lost; servers {}\n",
            self.fault,
            self.flavour,
            self.failovers,
            self.cycles,
            self.acked_writes,
            self.lost_acked_writes,
            if self.consistent {
                "consistent"
            } else {
                "NOT consistent"
            }
        ));
        t.push_str(&format!(
            "unavailable (client-seen): {}\n",
            spread(&self.unavailable_ms)
        ));
        t.push_str(&format!(
            "  through HAProxy:         {}\n",
            spread(&self.haproxy_unavailable_ms)
        ));
        t.push_str(&format!(
            "failover complete:         {}\n",
            spread(&self.failover_ms)
        ));
        t.push_str(&format!(
            "EC2 calls: {} forwarded, {} throttled, {} refused (outage)\n",
            self.ec2_api.forwarded, self.ec2_api.throttled, self.ec2_api.refused
        ));
        for l in &self.lost {
            t.push_str(&format!(
                "LOST: client {} row {} (GTID {}), acknowledged at {}\n",
                l.client, l.seq, l.gtid, l.acked_at_ms
            ));
        }
        if !self.routes_as_wanted {
            t.push_str(&format!(
                "VIP routes: NOT all where the {} mode wants them\n",
                self.vip_mode
            ));
        }
        for (host, (sum, n)) in &self.checksums {
            t.push_str(&format!("checksum {host}: {sum} ({n} rows)\n"));
        }
        if let Some(e) = &self.error {
            t.push_str(&format!("ERROR: {e}\n"));
        }
        t.push_str(&format!(
            "{}\nfiles: {} (timeline.svg, report.json, hosts/*/ logs)\n",
            if self.passed() { "PASS" } else { "FAIL" },
            self.out
        ));
        t
    }

    pub fn svg(&self) -> String {
        self.timeline.svg(&self.fault)
    }
}

impl Timeline {
    fn new(start_ms: u64, end_ms: u64, cycles: &[CycleReport], w: &Workload) -> Timeline {
        let secs = (end_ms.saturating_sub(start_ms) / 1000 + 1) as usize;
        let mut t = Timeline {
            acks: vec![0; secs],
            errors: vec![0; secs],
            marks: Vec::new(),
        };
        let bin = |at: u64| (at.saturating_sub(start_ms) / 1000) as usize;
        for a in &w.acks {
            if let Some(b) = t.acks.get_mut(bin(a.at_ms)) {
                *b += 1;
            }
        }
        for (_, at, _) in &w.errors {
            if let Some(b) = t.errors.get_mut(bin(*at)) {
                *b += 1;
            }
        }
        let s = |at: u64| at.saturating_sub(start_ms) as f64 / 1000.0;
        for c in cycles {
            t.marks
                .push((s(c.fault_at_ms), format!("fault {}", c.cycle), "#c0392b"));
            t.marks.push((
                s(c.fault_at_ms + c.failover_ms),
                format!("→ {}", c.new_master),
                "#27ae60",
            ));
        }
        t
    }

    fn svg(&self, fault: &str) -> String {
        let (w, h, left, top, bottom) = (1000.0, 320.0, 50.0, 30.0, 40.0);
        let plot_h = h - top - bottom;
        let n = self.acks.len().max(1) as f64;
        let peak = self
            .acks
            .iter()
            .chain(&self.errors)
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let x = |s: f64| left + s / n * (w - left - 10.0);
        let y = |v: f64| top + plot_h - v / peak * plot_h;
        let line = |series: &[u32], colour: &str| {
            let pts: Vec<String> = series
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{:.1},{:.1}", x(i as f64 + 0.5), y(*v as f64)))
                .collect();
            format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                pts.join(" ")
            )
        };
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{left}\" y=\"18\" font-size=\"13\">multiaz-chaos {fault}: acknowledged writes/s (blue), client errors/s (red); faults and completed failovers marked</text>\n"
        );
        out.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
            top + plot_h,
            w - 10.0,
            top + plot_h,
            top + plot_h
        ));
        out.push_str(&format!(
            "<text x=\"5\" y=\"{}\">{peak}</text>\n<text x=\"5\" y=\"{}\">0</text>\n",
            top + 10.0,
            top + plot_h
        ));
        let step = ((n / 10.0).ceil() as usize).max(1);
        for s in (0..self.acks.len()).step_by(step) {
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{s} s</text>\n",
                x(s as f64),
                top + plot_h + 15.0
            ));
        }
        for (i, (at, label, colour)) in self.marks.iter().enumerate() {
            let ly = top + 12.0 + (i % 2) as f64 * 12.0;
            out.push_str(&format!(
                "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"{colour}\" stroke-dasharray=\"4 3\"/>\n\
                 <text x=\"{2:.1}\" y=\"{ly}\" fill=\"{colour}\">{label}</text>\n",
                x(*at),
                top + plot_h,
                x(*at) + 3.0
            ));
        }
        out.push_str(&line(&self.acks, "#2e6fd8"));
        out.push_str(&line(&self.errors, "#c0392b"));
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(
            Spread::of(vec![300, 100, 200]),
            Spread {
                p50: 200,
                p99: 300,
                max: 300
            }
        );
        let hundred: Vec<u64> = (1..=100).collect();
        let s = Spread::of(hundred);
        assert_eq!((s.p50, s.p99, s.max), (50, 99, 100));
        assert_eq!(Spread::of(vec![]).max, 0);
    }
}
