//! Three-AZ cluster descriptions: one database node per AZ (`db1`..`db3`, ids 1..3, the
//! first the initial master), a VIP in one route table per AZ.

use multiaz_engine::{
    ClusterSpec, Flavour, NodeId, NodeKind, NodeSpec, PromotionRule, Timing, Vip, VipMode,
};

/// The AZs of the three nodes, in id order.
pub const AZS: [&str; 3] = ["az-a", "az-b", "az-c"];
/// The VIP every test cluster carries.
pub const VIP: &str = "10.0.100.10";

/// A three-AZ cluster description to build; [`ThreeAzs::build`] validates it.
#[derive(Debug, Clone)]
pub struct ThreeAzs {
    pub name: String,
    pub flavour: Flavour,
    pub promotions: [PromotionRule; 3],
    pub client_az: Option<String>,
    pub route_tables: Vec<String>,
    pub timing: Timing,
    /// The third node is a witness sidecar (no mysqld), named `witness`.
    pub witness: bool,
    /// Where the route tables point; each table is its node's AZ's (in order).
    pub vip_mode: VipMode,
}

impl Default for ThreeAzs {
    fn default() -> Self {
        ThreeAzs {
            name: "test".into(),
            flavour: Flavour::Mariadb,
            promotions: [PromotionRule::Neutral; 3],
            client_az: None,
            route_tables: vec!["rtb-a".into(), "rtb-b".into(), "rtb-c".into()],
            timing: Timing::default(),
            witness: false,
            vip_mode: VipMode::Route,
        }
    }
}

impl ThreeAzs {
    /// # Panics
    /// When the description is invalid: a test's own fixture is wrong.
    pub fn build(self) -> ClusterSpec {
        let nodes = (0..3)
            .map(|i| {
                let witness = self.witness && i == 2;
                NodeSpec {
                    id: NodeId(i as u64 + 1),
                    name: if witness {
                        "witness".into()
                    } else {
                        format!("db{}", i + 1)
                    },
                    az: AZS[i].to_string(),
                    kind: if witness {
                        NodeKind::Witness
                    } else {
                        NodeKind::Database
                    },
                    promotion: self.promotions[i],
                }
            })
            .collect();
        ClusterSpec {
            name: self.name,
            flavour: self.flavour,
            initial_master: NodeId(1),
            client_az: self.client_az,
            vip: Vip {
                address: VIP.parse().expect("a literal address"),
                table_azs: self
                    .route_tables
                    .iter()
                    .zip(AZS)
                    // A witness's AZ has no database host to anchor a table.
                    .filter(|(_, az)| !(self.witness && *az == AZS[2]))
                    .map(|(t, az)| (t.clone(), az.to_string()))
                    .collect(),
                route_tables: self.route_tables,
                forward: true,
                mode: self.vip_mode,
            },
            timing: self.timing,
            nodes,
        }
        .validate()
        .unwrap_or_else(|e| panic!("a test cluster description is invalid: {e}"))
    }
}
