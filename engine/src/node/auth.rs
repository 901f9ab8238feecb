//! Whether a connection has given the password: the `-NOAUTH` gate, `AUTH`,
//! and the check that `HELLO ... AUTH` shares with it, with Redis 7.0's
//! replies (checked against redis-server 7.0.15 started with
//! `--requirepass`).
//!
//! Keel has one user, Redis's `default`: with `requirepass` set it needs
//! that password; without, it takes any password, and only `AUTH
//! <password>` (no user) is an error, as Redis answers it.

use crate::command::CommandSpec;
use crate::resp::Reply;
use crate::secret::Secret;

/// The only user name Keel knows (Redis's user when ACLs are not used).
/// Compared exactly: Redis's user names are case-sensitive.
pub const DEFAULT_USER: &[u8] = b"default";

/// Redis's command flag of the commands a connection may run before it
/// has given the password: AUTH, HELLO, QUIT and RESET.
const NO_AUTH_FLAG: &str = "no_auth";

/// Whether a connection may run commands other than the `no_auth` ones.
/// Holds no password: only the outcome of the last successful check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionAuth {
    authenticated: bool,
}

impl ConnectionAuth {
    /// The state of a new connection, and of one after RESET:
    /// authenticated only when no password is required.
    pub fn new(required: Option<&Secret>) -> ConnectionAuth {
        ConnectionAuth {
            authenticated: required.is_none(),
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The `-NOAUTH` gate, passed after the command is known and its arity
    /// checked (Redis answers an unknown command or a wrong arity first).
    pub fn admit(&self, spec: &CommandSpec) -> Result<(), Reply> {
        if self.authenticated || spec.flags.contains(&NO_AUTH_FLAG) {
            Ok(())
        } else {
            Err(Reply::Error("NOAUTH Authentication required.".into()))
        }
    }

    /// `AUTH [username] password`.
    pub fn auth_command(
        &mut self,
        required: Option<&Secret>,
        args: &[Vec<u8>],
    ) -> Result<(), AuthRefused> {
        match args {
            [_, _] if required.is_none() => Err(AuthRefused::NoPassword),
            [_, password] => self.log_in(required, DEFAULT_USER, password),
            [_, user, password] => self.log_in(required, user, password),
            _ => Err(AuthRefused::Syntax),
        }
    }

    /// Checks a user name and password. On success the connection is
    /// authenticated; on failure it stays as it was (as in Redis, a wrong
    /// AUTH after a right one does not log the connection out) and the
    /// reply says nothing about which part was wrong.
    pub fn log_in(
        &mut self,
        required: Option<&Secret>,
        user: &[u8],
        password: &[u8],
    ) -> Result<(), AuthRefused> {
        let known_user = user == DEFAULT_USER;
        let password_matches = required.is_none_or(|secret| secret.verify(password));
        if known_user && password_matches {
            self.authenticated = true;
            Ok(())
        } else {
            Err(AuthRefused::WrongPass)
        }
    }
}

/// Why AUTH (or HELLO's AUTH option) did not log the connection in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRefused {
    /// A wrong password or an unknown user: one reply for both.
    WrongPass,
    /// `AUTH <password>` while no password is set.
    NoPassword,
    /// More than a user and a password.
    Syntax,
}

impl AuthRefused {
    pub fn reply(self) -> Reply {
        Reply::Error(match self {
            AuthRefused::WrongPass => "WRONGPASS invalid username-password pair or user is disabled.".into(),
            AuthRefused::NoPassword => "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into(),
            AuthRefused::Syntax => "ERR syntax error".into(),
        })
    }
}

/// HELLO's reply to a connection that has not given the password and did
/// not give it in HELLO's AUTH option.
pub fn hello_needs_auth() -> Reply {
    Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::lookup;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|word| word.as_bytes().to_vec()).collect()
    }

    fn error_text(reply: &Reply) -> &str {
        match reply {
            Reply::Error(text) => text,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn before_auth_only_no_auth_commands_pass_the_gate() {
        let secret = Secret::new("secret");
        let auth = ConnectionAuth::new(Some(&secret));
        for name in ["auth", "hello", "quit", "reset"] {
            assert!(
                auth.admit(lookup(name.as_bytes()).unwrap()).is_ok(),
                "{name}"
            );
        }
        for name in ["get", "set", "ping", "client", "config", "command", "info"] {
            let refused = auth.admit(lookup(name.as_bytes()).unwrap()).unwrap_err();
            assert_eq!(error_text(&refused), "NOAUTH Authentication required.");
        }
        let open = ConnectionAuth::new(None);
        assert!(open.admit(lookup(b"get").unwrap()).is_ok());
    }

    #[test]
    fn auth_with_the_password_or_the_default_user_and_password_logs_in() {
        let secret = Secret::new("secret");
        for request in [&["AUTH", "secret"][..], &["AUTH", "default", "secret"]] {
            let mut auth = ConnectionAuth::new(Some(&secret));
            assert_eq!(auth.auth_command(Some(&secret), &args(request)), Ok(()));
            assert!(auth.is_authenticated());
        }
    }

    #[test]
    fn wrong_passwords_and_other_users_are_refused_alike_and_change_nothing() {
        let secret = Secret::new("secret");
        let mut auth = ConnectionAuth::new(Some(&secret));
        for request in [
            &["AUTH", "wrong"][..],
            &["AUTH", "bob", "secret"],
            &["AUTH", "Default", "secret"],
            &["AUTH", "default", "Secret"],
        ] {
            let refused = auth.auth_command(Some(&secret), &args(request));
            assert_eq!(refused, Err(AuthRefused::WrongPass), "{request:?}");
            assert!(!auth.is_authenticated());
        }
        assert_eq!(
            error_text(&AuthRefused::WrongPass.reply()),
            "WRONGPASS invalid username-password pair or user is disabled."
        );
        auth.log_in(Some(&secret), b"default", b"secret").unwrap();
        let _ = auth.auth_command(Some(&secret), &args(&["AUTH", "wrong"]));
        assert!(auth.is_authenticated(), "a failed AUTH does not log out");
    }

    #[test]
    fn without_a_password_auth_answers_as_redis_does() {
        let mut auth = ConnectionAuth::new(None);
        let refused = auth.auth_command(None, &args(&["AUTH", "x"]));
        assert_eq!(refused, Err(AuthRefused::NoPassword));
        assert!(error_text(&AuthRefused::NoPassword.reply())
            .starts_with("ERR AUTH <password> called without any password"),);
        assert_eq!(
            auth.auth_command(None, &args(&["AUTH", "default", "anything"])),
            Ok(())
        );
        let refused = auth.auth_command(None, &args(&["AUTH", "bob", "x"]));
        assert_eq!(refused, Err(AuthRefused::WrongPass));
        let refused = auth.auth_command(None, &args(&["AUTH", "a", "b", "c"]));
        assert_eq!(refused, Err(AuthRefused::Syntax));
        assert_eq!(error_text(&AuthRefused::Syntax.reply()), "ERR syntax error");
    }
}
