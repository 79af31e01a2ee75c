//! A mysqld's network address, as the configuration names it.

/// A mysqld's address as the config gives it (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl Address {
    pub fn parse(text: &str) -> Result<Address, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not host:port"))?;
        let port = port
            .parse()
            .map_err(|_| format!("{text:?}: bad port {port:?}"))?;
        if host.is_empty() {
            return Err(format!("{text:?}: empty host"));
        }
        Ok(Address {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_a_clear_error() {
        assert_eq!(
            Address::parse("10.0.0.1:3306").unwrap(),
            Address {
                host: "10.0.0.1".into(),
                port: 3306
            }
        );
        assert_eq!(Address::parse("[::1]:3307").unwrap().host, "::1");
        assert!(Address::parse("db-a").unwrap_err().contains("host:port"));
        assert!(Address::parse("db-a:x").unwrap_err().contains("bad port"));
    }
}
