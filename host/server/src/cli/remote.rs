//! Commands that talk to a running server over its REST API (`plugin reload`, `script run`,
//! `lint`, `access`): where it is, which key, which certificate to trust.

use super::Failure;
use serde_json::Value as Json;
use std::path::PathBuf;

/// How to reach a running server.
#[derive(clap::Args, Debug)]
pub struct Remote {
    /// The server's address, e.g. https://localhost:8443.
    #[arg(long, value_name = "URL", env = "THINGHOST_URL")]
    pub url: String,
    /// A file holding the application key to sign in with (the key is never an argument, so
    /// that it stays out of the shell history and the process list).
    #[arg(long, value_name = "FILE", env = "THINGHOST_APP_KEY_FILE")]
    pub app_key_file: PathBuf,
    /// A PEM certificate to trust besides the system's (the server's `--dev` certificate is
    /// DATA/dev-cert.pem).
    #[arg(long, value_name = "PEM", env = "THINGHOST_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

impl Remote {
    /// POSTs `body` to `path` (below the server's address): the status and the JSON reply (a
    /// refusal's `error` message is [`Remote::message`]). Not reaching the server is the error.
    pub fn post(&self, path: &str, body: &Json) -> Result<(u16, Json), Failure> {
        let key = std::fs::read_to_string(&self.app_key_file).map_err(|e| {
            Failure(format!(
                "cannot read the application key file {}: {e}",
                self.app_key_file.display()
            ))
        })?;
        let mut client =
            reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(120));
        if let Some(ca) = &self.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| {
                Failure(format!("cannot read the certificate {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| Failure(format!("{} is not a PEM certificate: {e}", ca.display())))?;
            client = client.add_root_certificate(cert);
        }
        let client = client.build()?;
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let reply = client
            .post(&url)
            .header("appKey", key.trim())
            .header("Accept", "application/json")
            .json(body)
            .send()
            .map_err(|e| {
                Failure(format!(
                    "cannot reach {url}: {e}; is the server running there (and, for a --dev server, did you pass --ca-cert DATA/dev-cert.pem)?"
                ))
            })?;
        let status = reply.status().as_u16();
        let text = reply.text()?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Json::String(text)),
        ))
    }

    /// POSTs `body` to `path` and expects a success: its JSON reply; any other answer is the
    /// error, with the server's message.
    pub fn call(&self, path: &str, body: &Json) -> Result<Json, Failure> {
        match self.post(path, body)? {
            (200, reply) => Ok(reply),
            (status, reply) => Err(Self::refused(status, &reply)),
        }
    }

    /// The failure an answer other than a success is.
    pub fn refused(status: u16, reply: &Json) -> Failure {
        Failure(format!(
            "the server answered {status}: {}",
            Self::message(reply)
        ))
    }

    /// The message of a reply that is not a success.
    pub fn message(reply: &Json) -> String {
        reply["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| reply.to_string())
    }
}
