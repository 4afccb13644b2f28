//! Four identity certificate servers as separate `custos registry serve` processes on loopback — a manufacturer's,
//! an integrator's maintenance registry, a site's infield registry and a developer's — each with its own policy.
//! A device certificate travels manufacturer → maintenance → infield with its endorsement; statuses given at
//! maintenance reach the manufacturer (push) and the site (pull); differing filters converge; a private domain is
//! refused; a manufacturer that rewrites its log is flagged and nothing of it is taken.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .current_dir(dir)
        .env_remove("CUSTOS_REGISTRY_URL")
        .env_remove("CUSTOS_REGISTRY_DATABASE_URL")
        .output()
        .unwrap()
}

/// `custos registry sync` of the registry `name` (data in `dir/name`, policy `dir/name.toml`); must succeed.
fn sync(dir: &Path, name: &str) {
    ok(
        dir,
        &[
            "registry",
            "sync",
            "--data-dir",
            name,
            "--policy",
            &format!("{name}.toml"),
        ],
    );
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "custos {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Server {
    child: Child,
    url: String,
    key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, name: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args([
            "registry",
            "serve",
            "--data-dir",
            name,
            "--policy",
            &format!("{name}.toml"),
        ])
        .args(["--listen", "127.0.0.1:0", "--sync-every", "0"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("CUSTOS_REGISTRY_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines.next().unwrap().unwrap();
    let key = lines.next().unwrap().unwrap();
    Server {
        child,
        url: format!("http://{}", addr.strip_prefix("listening on ").unwrap()),
        key: key.strip_prefix("log key ").unwrap().to_string(),
    }
}

struct Party {
    file: String,
    fpr: String,
}

fn party(dir: &Path, name: &str, uid: &str) -> Party {
    let file = format!("{name}.party");
    let fpr = ok(dir, &["registry", "party", "--uid", uid, "--out", &file])
        .trim()
        .to_string();
    std::fs::write(
        dir.join(format!("{name}.asc")),
        ok(dir, &["registry", "party-cert", "--key", &file]),
    )
    .unwrap();
    Party { file, fpr }
}

fn get(url: &str, path: &str) -> (u16, Vec<u8>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = custos_client::HubClient::new(
                url,
                std::time::Duration::from_secs(10),
                &Default::default(),
            )
            .unwrap();
            match client.get(path, None).await {
                Ok(body) => (200, body),
                Err(custos_client::ClientError::Refused {
                    status, message, ..
                }) => (status, message.into_bytes()),
                Err(e) => panic!("{e}"),
            }
        })
}

fn cert_json(url: &str, fpr: &str) -> Option<Value> {
    let (status, body) = get(url, &format!("/registry/v1/certs/{fpr}"));
    (status == 200).then(|| serde_json::from_slice(&body).unwrap())
}

fn parties_toml(p: &[(&str, &Party, &str)]) -> String {
    p.iter()
        .map(|(name, party, role)| {
            format!(
                "[[party]]\nname = \"{name}\"\nfingerprint = \"{}\"\nroles = [\"{role}\"]\n",
                party.fpr
            )
        })
        .collect()
}

fn policy(dir: &Path, name: &str, text: String) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn four_registries_sync_under_their_policies_and_a_rewritten_log_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let acme = party(dir, "acme", "Acme Sensors (manufacturer)");
    let integ = party(dir, "integ", "Integra (integrator)");
    let maint = party(dir, "maint", "Maint Co (maintainer)");
    let devco = party(dir, "devco", "DevCo (developer)");
    // The site's registry reads the developer's internal domain as this party, signing its reads.
    let site = party(dir, "site", "Site 7 (infield registry)");

    // The manufacturer's registry: its devices, public; the maintainer may give statuses there.
    policy(
        dir,
        "manufacturer",
        format!(
            "name = \"manufacturer\"\ndefault_domain = \"acme-devices\"\n{}\
         [[domain]]\nname = \"acme-devices\"\nread = [\"*\"]\nwrite = [\"acme\", \"maint\"]\n",
            parties_toml(&[
                ("acme", &acme, "manufacturer"),
                ("maint", &maint, "maintainer")
            ])
        ),
    );
    let manufacturer = serve(dir, "manufacturer");
    // The developer's registry: a public firmware domain and a private one.
    policy(
        dir,
        "developer",
        format!(
            "name = \"developer\"\ndefault_domain = \"firmware\"\n{}\
         [[domain]]\nname = \"firmware\"\nread = [\"*\"]\nwrite = [\"devco\"]\n\
         [[party]]\nname = \"site\"\nfingerprint = \"{}\"\nroles = []\n\
         [[domain]]\nname = \"internal\"\nread = [\"devco\", \"site\"]\nwrite = [\"devco\"]\n",
            parties_toml(&[("devco", &devco, "developer")]),
            site.fpr
        ),
    );
    let developer = serve(dir, "developer");
    // Maintenance: pulls the manufacturer's devices, pushes its statuses back; the integrator endorses here.
    policy(
        dir,
        "maintenance",
        format!(
            "name = \"maintenance\"\ndefault_domain = \"acme-devices\"\n{}\
         [[domain]]\nname = \"acme-devices\"\nread = [\"*\"]\nwrite = [\"acme\", \"integ\", \"maint\"]\n\
         [[pull]]\nname = \"manufacturer\"\nurl = \"{}\"\nkey = \"{}\"\ndomains = [\"acme-devices\"]\n\
         [[push]]\nname = \"manufacturer\"\nurl = \"{}\"\ndomains = [\"acme-devices\"]\n",
            parties_toml(&[
                ("acme", &acme, "manufacturer"),
                ("integ", &integ, "integrator"),
                ("maint", &maint, "maintainer")
            ]),
            manufacturer.url,
            manufacturer.key,
            manufacturer.url
        ),
    );
    let maintenance = serve(dir, "maintenance");
    // The site: pulls devices from maintenance and firmware from the developer. It does not know the integrator:
    // a narrower filter than maintenance's.
    let infield_policy = |extra: &str| {
        format!(
            "name = \"infield\"\ndefault_domain = \"acme-devices\"\n{}\
         [[domain]]\nname = \"acme-devices\"\nread = [\"*\"]\nwrite = [\"acme\", \"maint\"]\n\
         [[domain]]\nname = \"firmware\"\nread = [\"*\"]\nwrite = [\"devco\"]\n{extra}\
         [[pull]]\nname = \"maintenance\"\nurl = \"{}\"\nkey = \"{}\"\ndomains = [\"acme-devices\"]\n\
         [[pull]]\nname = \"developer\"\nurl = \"{}\"\nkey = \"{}\"\ndomains = [\"firmware\"]\n",
            parties_toml(&[
                ("acme", &acme, "manufacturer"),
                ("maint", &maint, "maintainer"),
                ("devco", &devco, "developer")
            ]),
            maintenance.url,
            maintenance.key,
            developer.url,
            developer.key
        )
    };
    policy(dir, "infield", infield_policy(""));
    let infield = serve(dir, "infield");

    // Party certificates where their certifications are checked.
    for (server, parties) in [
        (&manufacturer, vec!["acme", "maint"]),
        (&developer, vec!["devco", "site"]),
    ] {
        for p in parties {
            ok(
                dir,
                &["registry", "add", "--url", &server.url, &format!("{p}.asc")],
            );
        }
    }
    ok(
        dir,
        &["registry", "add", "--url", &maintenance.url, "integ.asc"],
    );

    // The device makes its certificate; its manufacturer certifies it with its attributes and publishes it.
    ok(dir, &["device", "make", "--state-dir", "dev1"]);
    std::fs::write(
        dir.join("dev1.asc"),
        ok(dir, &["device", "certificate", "--state-dir", "dev1"]),
    )
    .unwrap();
    ok(
        dir,
        &[
            "registry",
            "certify",
            "--key",
            &acme.file,
            "--role",
            "manufacturer",
            "--attr",
            "model=TH-1",
            "--attr",
            "lot=2026-48",
            "--in",
            "dev1.asc",
            "--out",
            "dev1-made.asc",
        ],
    );
    let added: Value = serde_json::from_str(&ok(
        dir,
        &[
            "registry",
            "add",
            "--url",
            &manufacturer.url,
            "dev1-made.asc",
        ],
    ))
    .unwrap();
    let device = added[0]["fingerprint"].as_str().unwrap().to_string();

    // Maintenance pulls it (with the parties' certificates, in log order); the integrator endorses it there.
    sync(dir, "maintenance");
    let at_maint = cert_json(&maintenance.url, &device).expect("maintenance has the device");
    assert_eq!(at_maint["certifications"].as_array().unwrap().len(), 1);
    std::fs::write(
        dir.join("dev1-m.asc"),
        at_maint["armored"].as_str().unwrap(),
    )
    .unwrap();
    ok(
        dir,
        &[
            "registry",
            "certify",
            "--key",
            &integ.file,
            "--role",
            "integrator",
            "--in",
            "dev1-m.asc",
            "--out",
            "dev1-e.asc",
        ],
    );
    ok(
        dir,
        &["registry", "add", "--url", &maintenance.url, "dev1-e.asc"],
    );
    ok(
        dir,
        &[
            "registry",
            "status",
            "--key",
            &maint.file,
            "--url",
            &maintenance.url,
            "--subject",
            &device,
            "--status",
            "in-use",
            "--domain",
            "acme-devices",
        ],
    );

    // The developer signs a firmware image, public, and an internal one.
    std::fs::write(dir.join("fw.bin"), b"firmware 1.0").unwrap();
    std::fs::write(dir.join("tool.bin"), b"internal tool").unwrap();
    ok(
        dir,
        &[
            "registry",
            "code",
            "--key",
            &devco.file,
            "--url",
            &developer.url,
            "--file",
            "fw.bin",
            "--name",
            "th1",
            "--version",
            "1.0",
            "--domain",
            "firmware",
        ],
    );
    ok(
        dir,
        &[
            "registry",
            "code",
            "--key",
            &devco.file,
            "--url",
            &developer.url,
            "--file",
            "tool.bin",
            "--name",
            "tool",
            "--version",
            "1",
            "--domain",
            "internal",
        ],
    );

    // Maintenance pushes the endorsement and the status to the manufacturer; the site pulls.
    sync(dir, "maintenance");
    sync(dir, "infield");
    let at_site = cert_json(&infield.url, &device).expect("the site has the device");
    assert_eq!(at_site["status"]["status"], "in-use");
    // The site does not know the integrator: its endorsement is not kept there (its filter), yet sync went on.
    let roles: Vec<_> = at_site["certifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["role"].clone())
        .collect();
    assert_eq!(roles, vec![Value::from("manufacturer")]);
    let at_maker = cert_json(&manufacturer.url, &device).unwrap();
    assert_eq!(
        at_maker["status"]["status"], "in-use",
        "the status was pushed to the manufacturer"
    );
    let fw = hex::encode(<[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(
        b"firmware 1.0",
    )));
    let (_, body) = get(&infield.url, &format!("/registry/v1/code/{fw}"));
    let code: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code["identities"].as_array().unwrap().len(), 1, "{code}");

    // A device at the site installs the firmware: the site's registry pulled its code identity from the developer.
    ok(dir, &["device", "make", "--state-dir", "site-dev"]);
    let installed = ok(
        dir,
        &[
            "device",
            "update",
            "--state-dir",
            "site-dev",
            "--file",
            "fw.bin",
            "--registry",
            &infield.url,
            "--log-key",
            &infield.key,
            "--developer",
            "devco.asc",
            "--json",
        ],
    );
    let installed: Value = serde_json::from_str(&installed).unwrap();
    assert_eq!(installed["version"], "1.0");
    assert!(dir.join("site-dev/updates/th1-1.0.bin").exists());
    // An image nobody signed, and the signed one with the log key of another registry: refused.
    std::fs::write(dir.join("evil.bin"), b"firmware 1.0 + backdoor").unwrap();
    for (file, key) in [
        ("evil.bin", infield.key.as_str()),
        ("fw.bin", maintenance.key.as_str()),
    ] {
        let out = run(
            dir,
            &[
                "device",
                "update",
                "--state-dir",
                "site-dev",
                "--file",
                file,
                "--registry",
                &infield.url,
                "--log-key",
                key,
                "--developer",
                "devco.asc",
            ],
        );
        assert!(!out.status.success(), "{file} must be refused");
    }
    // Deprecated at the developer, pulled by the site: refused from then on.
    ok(
        dir,
        &[
            "registry",
            "status",
            "--key",
            &devco.file,
            "--url",
            &developer.url,
            "--subject",
            &fw,
            "--status",
            "deprecated",
            "--domain",
            "firmware",
            "--note",
            "CVE-2026-0001",
        ],
    );
    sync(dir, "infield");
    let out = run(
        dir,
        &[
            "device",
            "update",
            "--state-dir",
            "site-dev",
            "--file",
            "fw.bin",
            "--registry",
            &infield.url,
            "--log-key",
            &infield.key,
            "--developer",
            "devco.asc",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deprecated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Stolen, at maintenance: the site learns it at its next pull, and the earlier "in-use" it already holds (and
    // is sent again) does not outweigh it: the latest status by its own time wins.
    ok(
        dir,
        &[
            "registry",
            "status",
            "--key",
            &maint.file,
            "--url",
            &maintenance.url,
            "--subject",
            &device,
            "--status",
            "stolen",
            "--domain",
            "acme-devices",
        ],
    );
    sync(dir, "maintenance");
    sync(dir, "infield");
    assert_eq!(
        cert_json(&infield.url, &device).unwrap()["status"]["status"],
        "stolen"
    );
    // Syncing again changes nothing and converges: a second round appends nothing anywhere.
    let size = |url: &str| -> u64 {
        let (_, body) = get(url, "/registry/v1/checkpoint");
        String::from_utf8(body)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = (
        size(&manufacturer.url),
        size(&maintenance.url),
        size(&infield.url),
    );
    sync(dir, "maintenance");
    sync(dir, "infield");
    assert_eq!(
        (
            size(&manufacturer.url),
            size(&maintenance.url),
            size(&infield.url)
        ),
        before
    );

    // A private domain is refused to the site: its pull fails and takes nothing.
    policy(
        dir,
        "infield",
        infield_policy("[[domain]]\nname = \"internal\"\nread = [\"*\"]\nwrite = [\"devco\"]\n")
            .replace(
                "domains = [\"firmware\"]",
                "domains = [\"firmware\", \"internal\"]",
            ),
    );
    let out = run(
        dir,
        &[
            "registry",
            "sync",
            "--data-dir",
            "infield",
            "--policy",
            "infield.toml",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not readable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Signing its reads as a party the developer does not know: refused. As "site", which the developer's policy
    // lets read the domain: taken.
    let with_reader = |file: &str| {
        infield_policy("[[domain]]\nname = \"internal\"\nread = [\"*\"]\nwrite = [\"devco\"]\n")
            .replace(
                "domains = [\"firmware\"]",
                &format!("domains = [\"firmware\", \"internal\"]\nreader_key = \"{file}\""),
            )
    };
    policy(dir, "infield", with_reader(&integ.file));
    let out = run(
        dir,
        &[
            "registry",
            "sync",
            "--data-dir",
            "infield",
            "--policy",
            "infield.toml",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a party"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    policy(dir, "infield", with_reader(&site.file));
    sync(dir, "infield");
    // The site's server reads its policy at start: restarted, it serves the new domain.
    drop(infield);
    let infield = serve(dir, "infield");
    let tool_digest = hex::encode(<[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(
        b"internal tool",
    )));
    let (_, body) = get(&infield.url, &format!("/registry/v1/code/{tool_digest}"));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["identities"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The developer still serves it to nobody else.
    let (status, _) = get(&developer.url, &format!("/registry/v1/code/{tool_digest}"));
    assert_eq!(status, 200);
    let (_, body) = get(&developer.url, &format!("/registry/v1/code/{tool_digest}"));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["identities"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    policy(dir, "infield", infield_policy(""));

    // The manufacturer's log is rewritten (its database replaced, same key): maintenance flags it.
    let maint_size = size(&maintenance.url);
    drop(manufacturer);
    std::fs::remove_file(dir.join("manufacturer/registry.db")).unwrap();
    let _ = std::fs::remove_file(dir.join("manufacturer/registry.db-wal"));
    let _ = std::fs::remove_file(dir.join("manufacturer/registry.db-shm"));
    let manufacturer = serve(dir, "manufacturer");
    let forged_url = manufacturer.url.clone();
    for p in ["acme", "maint"] {
        ok(
            dir,
            &["registry", "add", "--url", &forged_url, &format!("{p}.asc")],
        );
    }
    ok(dir, &["device", "make", "--state-dir", "dev2"]);
    std::fs::write(
        dir.join("dev2.asc"),
        ok(dir, &["device", "certificate", "--state-dir", "dev2"]),
    )
    .unwrap();
    for i in 0..12 {
        ok(
            dir,
            &[
                "registry",
                "certify",
                "--key",
                &acme.file,
                "--role",
                "manufacturer",
                "--attr",
                &format!("lot={i}"),
                "--in",
                "dev2.asc",
                "--out",
                "dev2-made.asc",
            ],
        );
        ok(
            dir,
            &["registry", "add", "--url", &forged_url, "dev2-made.asc"],
        );
    }
    let text = std::fs::read_to_string(dir.join("maintenance.toml")).unwrap();
    let old_url = text
        .lines()
        .find(|l| l.starts_with("url = "))
        .unwrap()
        .to_string();
    std::fs::write(
        dir.join("maintenance.toml"),
        text.replace(&old_url, &format!("url = \"{forged_url}\"")),
    )
    .unwrap();
    let out = run(
        dir,
        &[
            "registry",
            "sync",
            "--data-dir",
            "maintenance",
            "--policy",
            "maintenance.toml",
        ],
    );
    assert!(!out.status.success(), "a rewritten log must fail the sync");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("flagged"), "{err}");
    assert_eq!(
        size(&maintenance.url),
        maint_size,
        "nothing of the rewritten log was taken"
    );
    // It stays flagged.
    let out = run(
        dir,
        &[
            "registry",
            "sync",
            "--data-dir",
            "maintenance",
            "--policy",
            "maintenance.toml",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("flagged"));
    drop((infield, developer, maintenance));
}
