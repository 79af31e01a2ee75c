//! The example configuration with its secrets taken from the environment, as the tests
//! that parse it or hand it to `multiaz` use it.
#![allow(dead_code)] // each test binary uses its own part

pub const EXAMPLE: &str = include_str!("../../examples/multiaz.toml");

/// The environment the example then needs: (variable, value).
pub const SECRET_ENV: [(&str, &str); 2] = [
    ("MYSQL_PW", "s3cret-password"),
    ("KEY", "0123456789abcdef0123"),
];

/// The example with `password_env`/`key_env` instead of files, and no admin token.
pub fn with_env_secrets() -> String {
    EXAMPLE
        .replace(
            "password_file = \"/etc/multiaz/mysql-password\"",
            "password_env = \"MYSQL_PW\"",
        )
        .replace(
            "key_file = \"/etc/multiaz/cluster-key\"",
            "key_env = \"KEY\"",
        )
        .replace("token_file = \"/etc/multiaz/admin-token\"", "")
}

/// Looks a variable up in [`SECRET_ENV`].
pub fn env(name: &str) -> Option<String> {
    SECRET_ENV
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}
