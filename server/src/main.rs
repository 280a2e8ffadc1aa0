//! `netapi-chat`: the chat server's command line. With no arguments it runs the server on the
//! configuration of the environment (`NETAPI_CHAT_*` variables) over the defaults; `--config
//! FILE` adds a TOML file under the environment; `check-config` prints the configuration in
//! force and exits; `tokens add|list|revoke` manage the token file of a running server
//! (`netapi_chat::admin`); `client …` drives the API as an application would
//! (`netapi_chat::client`). Every setting is listed in `netapi_chat::config::SETTINGS`.

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use netapi_chat::config::{Config, SettingNames, Sources};
use std::io::Write as _;
use std::path::PathBuf;

/// Exit status of an invalid configuration (as a usage error).
const EXIT_BAD_CONFIG: u8 = 2;

/// OMA RESTful Network API for Chat server.
#[derive(Parser)]
#[command(name = "netapi-chat", version, about, long_about = None)]
#[command(after_help = "`netapi-chat --help` lists every setting.")]
struct Cli {
    /// TOML configuration file (`key = value` per setting); the environment overrides it.
    /// Not for `client`, which reads none: it refuses --config and ignores NETAPI_CHAT_CONFIG.
    #[arg(
        short,
        long,
        value_name = "FILE",
        env = "NETAPI_CHAT_CONFIG",
        global = true
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do (by default: serve).
#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print the effective configuration (secrets redacted) and exit: 0 when it is valid, 2
    /// with a message naming the problem when it is not.
    CheckConfig,
    /// Manage the access tokens of the token file; a running server uses a change within
    /// 250 ms, without a restart.
    #[command(subcommand)]
    Tokens(Tokens),
    /// Have the running server write a consistent copy of its data directory (database,
    /// webhook secret, token file) into DIR, which it creates; needs NETAPI_CHAT_ADMIN_TOKEN.
    /// Restore: run a server with NETAPI_CHAT_DATA_DIR=DIR.
    Backup {
        /// The directory to create (must not exist).
        dir: PathBuf,
        /// The server's base URL (default: the configured bind address, https:// when
        /// NETAPI_CHAT_TLS_CERT is set, that certificate trusted).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Print what the running server stores: subscriptions, open sessions, messages,
    /// undelivered notifications (per subscription); needs NETAPI_CHAT_ADMIN_TOKEN.
    Summary {
        /// The server's base URL (default: the configured bind address, https:// when
        /// NETAPI_CHAT_TLS_CERT is set, that certificate trusted).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Print the server's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Drive the chat API as an application: subscribe, start, invite, accept, send, confirm,
    /// list, get (JSON or XML), and listen for notifications. Needs no server configuration.
    Client(netapi_chat::client::ClientArgs),
}

/// `tokens …`: edits of the token file (atomic, mode 0600; see `netapi_chat::admin`).
#[derive(Subcommand)]
enum Tokens {
    /// Add a token for one or more users: `tokens add TOKEN USER...`, or `tokens add
    /// --generate USER...` to have a random token made and printed on stdout (it is never shown
    /// again). TOKEN `-` reads it from stdin (keeps it out of the process list and shell
    /// history). A user is a tel: or sip: address, or `*` for any user (an application).
    Add {
        /// Generate the token instead of taking it as the first argument.
        #[arg(long)]
        generate: bool,
        /// TOKEN USER... (or USER... with --generate). A token beginning with `-` goes after
        /// `--` (`tokens add -- -TOKEN USER`) or through stdin (`-`): taking hyphen values
        /// here would take the options after it (`--config`) for users.
        #[arg(required = true, value_name = "TOKEN|USER")]
        args: Vec<String>,
    },
    /// List the tokens: fingerprint (sha256:…, never the token) and users, one per line.
    List,
    /// Revoke a token, given by itself or by its fingerprint from `tokens list`.
    Revoke {
        /// The token, `-` to read it from stdin, or its `sha256:…` fingerprint. A token may
        /// begin with `-`, as one in 64 generated ones does (before, the churn review found
        /// such tokens taken for options and never revoked).
        #[arg(value_name = "TOKEN|FINGERPRINT", allow_hyphen_values = true)]
        token: String,
    },
}

/// The `tokens` command for the library: reads a `-` token from stdin, splits TOKEN from USERs.
fn tokens_command(tokens: Tokens) -> Result<netapi_chat::admin::TokensCommand, String> {
    use netapi_chat::admin::TokensCommand;
    let from_stdin = |word: String| -> Result<String, String> {
        if word != "-" {
            return Ok(word);
        }
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("reading the token from stdin: {e}"))?;
        Ok(line.trim().to_owned())
    };
    Ok(match tokens {
        Tokens::Add {
            generate: true,
            args,
        } => TokensCommand::Add {
            token: None,
            users: args,
        },
        Tokens::Add {
            generate: false,
            args,
        } => {
            let mut args = args.into_iter();
            let token = args.next().ok_or("tokens add: no TOKEN given")?;
            TokensCommand::Add {
                token: Some(from_stdin(token)?),
                users: args.collect(),
            }
        }
        Tokens::List => TokensCommand::List,
        Tokens::Revoke { token } => TokensCommand::Revoke(from_stdin(token)?),
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let command = Cli::command().after_long_help(netapi_chat::config::help_text());
    let matches = command.get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The client reads none of the server's configuration: one that does not load (or a
    // client machine without one) must not stop it. A file given to it on the command line
    // is refused: ignored, the client called its default URL while the operator expected
    // the file's server (`backup` and `summary` do read it). NETAPI_CHAT_CONFIG, set for the
    // server in an operator's environment, is ignored.
    let command = match cli.command {
        Some(Command::Client(_))
            if matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine) =>
        {
            eprintln!(
                "netapi-chat client: --config: the client reads no configuration file; give \
                 the server with --server (or NETAPI_CHAT_URL) and, for an https:// server, \
                 its certificate with --ca-file"
            );
            return std::process::ExitCode::from(netapi_chat::client::EXIT_USAGE);
        }
        Some(Command::Client(args)) => return netapi_chat::client::main(args).await,
        command => command,
    };
    let loaded = Sources::from_process(cli.config.as_deref())
        .and_then(|s| Config::from_sources(&s).map(|c| (s, c)));
    let (sources, config) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("netapi-chat: invalid configuration: {e}");
            return std::process::ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match command {
        // Handled above, before the configuration is loaded.
        Some(Command::Client(args)) => netapi_chat::client::main(args).await,
        Some(Command::CheckConfig) => {
            let names = sources.names();
            if let Err(e) = netapi_chat::server::check(&config) {
                eprintln!("netapi-chat: invalid configuration: {}", names.say(&e));
                return std::process::ExitCode::from(EXIT_BAD_CONFIG);
            }
            for unknown in unknown_variables() {
                eprintln!("netapi-chat: warning: {unknown} is not a setting: ignored");
            }
            for warning in config
                .warnings()
                .into_iter()
                .chain(netapi_chat::server::check_notes(&config))
            {
                eprintln!("netapi-chat: warning: {}", names.say(&warning));
            }
            // Stdout may be closed (e.g. piped into `head`): not an error of the configuration.
            let _ = std::io::stdout().write_all(sources.render(&config).as_bytes());
            eprintln!("netapi-chat: the configuration is valid");
            std::process::ExitCode::SUCCESS
        }
        Some(Command::Tokens(tokens)) => admin_output(
            tokens_command(tokens).and_then(|command| netapi_chat::admin::tokens(&config, command)),
        ),
        Some(Command::Backup { dir, url }) => {
            admin_output(netapi_chat::admin::backup(&config, url.as_deref(), &dir).await)
        }
        Some(Command::Summary { url, json }) => {
            admin_output(netapi_chat::admin::summary(&config, url.as_deref(), json).await)
        }
        None | Some(Command::Serve) => serve(config, sources.names()).await,
    }
}

/// Prints an admin command's output; exit 0, or 1 with the error on stderr.
fn admin_output(done: Result<netapi_chat::admin::Output, String>) -> std::process::ExitCode {
    match done {
        Ok(out) => {
            let _ = std::io::stdout().write_all(out.stdout.as_bytes());
            let _ = std::io::stderr().write_all(out.stderr.as_bytes());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netapi-chat: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The process's `NETAPI_CHAT_…` variables that are no setting (a misspelt one would otherwise
/// be ignored without a word; see `config::unknown_variables`).
fn unknown_variables() -> Vec<String> {
    netapi_chat::config::unknown_variables(std::env::vars_os().map(|(name, _)| name))
}

/// Runs the server until SIGTERM/SIGINT (see [`shutdown`]) or a fatal error.
async fn serve(config: Config, names: SettingNames) -> std::process::ExitCode {
    // The logger first (idempotent: the start installs it too), so that this warning is in
    // the configured format.
    if netapi_chat::logging::init(&config).is_ok() {
        for unknown in unknown_variables() {
            tracing::warn!("{unknown} is not a setting: ignored");
        }
        for warning in config.warnings() {
            tracing::warn!("{}", names.say(&warning));
        }
    }
    // What `check-config` refuses, the start refuses the same way (exit 2, "invalid
    // configuration"), before anything starts: a TLS key that does not match its certificate
    // was refused later, by the listener, with exit 1 and "could not listen" (the operator
    // review of 2026-12-07), which a supervisor told to stop on exit 2 restarts for ever.
    if let Err(e) = netapi_chat::server::check(&config) {
        eprintln!("netapi-chat: invalid configuration: {}", names.say(&e));
        return std::process::ExitCode::from(EXIT_BAD_CONFIG);
    }
    if let Err(e) = ignore_hangups() {
        tracing::warn!(error = %e, "cannot listen for SIGHUP: it stops the server at once");
    }
    let mut signals = match StopSignals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netapi-chat: cannot listen for stop signals: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let drain = netapi_chat::cluster::Drain::default();
    let netapi_chat::server::Started {
        server,
        notice,
        store,
        scheme,
        ..
    } = tokio::select! {
        // A cluster's standby stays in here, forwarding (or answering `503` while it cannot
        // reach the database), until it leads; a lone server stays here while its PostgreSQL
        // database cannot be reached (`store::open_unless_led`).
        started = netapi_chat::cluster::start(&config, &drain) => match started {
            Ok(s) => s,
            Err(e) => {
                eprintln!("netapi-chat: {}", names.say(&e.to_string()));
                return std::process::ExitCode::FAILURE;
            }
        },
        name = signals.next() => {
            // What is being forwarded is answered first (within the grace), as a leader
            // answers what it serves.
            let all = drain.stop(config.connections.shutdown_grace).await;
            // Not serving yet: a cluster's standby, or an instance waiting for its database.
            let role = if config.cluster_url.is_some() { "standby" } else { "waiting for its database" };
            let _ = writeln!(
                std::io::stdout(),
                "netapi-chat: {name}: stopped ({role}{})",
                if all { "" } else { "; some forwarded requests were cut at the grace" }
            );
            return std::process::ExitCode::SUCCESS;
        }
    };
    let addr = server.local_addr();
    println!(
        "netapi-chat listening on {scheme}://{addr} (API under /v1/chat/{{userId}}, OpenAPI at {scheme}://{addr}/openapi.json)"
    );
    if let Some(notice) = notice {
        // Stdout may be closed (e.g. a supervisor that read the first line): not fatal.
        let _ = writeln!(std::io::stdout(), "{notice}");
    }
    let mut server = server;
    let name = tokio::select! {
        r = &mut server => {
            if let Err(e) = r {
                eprintln!("netapi-chat: server stopped: {e}");
                return std::process::ExitCode::FAILURE;
            }
            return std::process::ExitCode::SUCCESS;
        }
        name = signals.next() => name,
    };
    shutdown(
        name,
        server,
        store,
        &drain,
        config.connections.shutdown_grace,
    )
    .await
}

/// SIGHUP is logged and ignored. It is not a stop: operators send it by habit to reload
/// (logrotate's `postrotate`, `kill -HUP` after an edit), and its default action killed the
/// process on the spot, requests in flight reset and nothing logged (ops review O3). What a
/// reload would re-read is re-read by itself when it changes (the token file, the TLS
/// certificate); the JWKS file is read at start. A graceful stop is SIGTERM or SIGINT.
fn ignore_hangups() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::warn!(
                "SIGHUP ignored: the token file and the TLS certificate are re-read when \
                 they change (the JWKS file at the next start); stop with SIGTERM"
            );
        }
    });
    Ok(())
}

/// The least time a graceful stop gives its store to close, however much of the grace the
/// requests took: a local SQLite commit and checkpoint take milliseconds; a PostgreSQL
/// database that does not answer would hold the exit for its whole wait (12 s, then a
/// reconnection's 12 s: the hand-over review saw a stop of 22 s with a 10 s grace).
const CLOSE_AT_LEAST: std::time::Duration = std::time::Duration::from_secs(2);

/// SIGTERM (what service managers send) and SIGINT (Ctrl-C), listened for from before the
/// start to the exit. One listener for the whole run: a signal that arrives while the start
/// completes (a standby taking the lead as a whole cluster is stopped) is kept for the next
/// wait. Before, each wait made its own listener, and a signal the start's wait lost to the
/// start completing was lost: the instance went on leading (an outside review: 5 of 15
/// cluster stops left one instance running).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next stop signal (or one that came since the last wait); its name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The graceful stop, in three steps within `grace`:
///
/// 1. Delivery winds down while requests are still served: no subscription expires here any
///    more (the next leader or the restart expires it and sends the notice), no new callback
///    attempt starts (standbys carrying attempts get no new ones), and the attempts under way
///    get up to half the grace to finish and forget their notification. Serving meanwhile
///    means a slow receiver delays the stop, not the clients: a cluster's standbys keep
///    forwarding to this leader until it hands the lead over (before, the listener closed
///    first, and every client of the cluster got `503` for as long as the slowest attempt:
///    the hand-over review). Standbys still holding attempts then are let go.
/// 2. The requests: long polls answer now, sockets close, no new connection (those already
///    made, backlog included, have their first request read); the requests in flight are
///    answered within what is left of the grace (past it they are dropped, and what they
///    committed is kept).
/// 3. What OMA 2012 subscriptions were delivered is recorded `Delivered`
///    (`Chat::receipts_recorded`, within the grace), then the store closes once nothing can
///    wait for a commit any more (every queued batch
///    committed, the database closed; a cluster's leader that answered everything hands the
///    lead over), within what is left of the grace but at least [`CLOSE_AT_LEAST`]: a
///    database that does not answer does not hold the exit (what was answered is stored).
///
/// Then one line on stdout, exit 0. What is not delivered stays in the outbox for the
/// restart or the next leader (same `webhook-id`). Exported spans still buffered are sent
/// last (`netapi_chat::logging::shutdown`).
async fn shutdown(
    signal: &str,
    server: dropshot::HttpServer<netapi_chat::handlers::ChatServer>,
    store: netapi_chat::store::Store,
    proxy: &netapi_chat::cluster::Drain,
    grace: std::time::Duration,
) -> std::process::ExitCode {
    let started = std::time::Instant::now();
    let now = tokio::time::Instant::now();
    let deadline = now + grace;
    let chat = std::sync::Arc::clone(&server.app_private().chat);
    chat.begin_stop();
    chat.stop_deliveries(now + grace / 2).await;
    chat.let_go_of_standbys();
    // Long polls answer now (an empty list) rather than hold the drain for their whole wait.
    netapi_chat::notify::channel::end_polls();
    // A standby that took the lead may still serve connections of its proxy (forwarding to
    // this server): they stop with it, each after the request it carries.
    let (drained, _) = tokio::join!(
        tokio::time::timeout_at(deadline, server.close()),
        proxy.stop(deadline.saturating_duration_since(tokio::time::Instant::now())),
    );
    // Every connection is closed: nothing can be answered from this server's memory any more,
    // so a cluster's leader may hand the lead over (the next one serves at once). Requests
    // cut at the grace may still be running: then the next one waits out the lease.
    let handing_over = matches!(drained, Ok(Ok(())));
    // Nothing delivers any more: what was delivered is recorded `Delivered` (OMA 2012
    // subscriptions) before the store closes, within the grace (past it, sent again after the
    // restart).
    chat.receipts_recorded(deadline).await;
    let outcome = match drained {
        Ok(Ok(())) => "requests in flight answered".to_owned(),
        Ok(Err(e)) => format!("server error while draining: {e}"),
        Err(_) => format!(
            "grace period of {:.1} s over, requests still in flight dropped",
            grace.as_secs_f64()
        ),
    };
    // Blocking (joins the store thread): off the async workers.
    let closing = tokio::task::spawn_blocking(move || match handing_over {
        true => store.close_handing_over(),
        false => store.close(),
    });
    let close_by = deadline.max(tokio::time::Instant::now() + CLOSE_AT_LEAST);
    let (store_state, closed) = match tokio::time::timeout_at(close_by, closing).await {
        Ok(Ok(())) => ("store closed", true),
        Ok(Err(_)) => ("store thread did not stop cleanly", true),
        Err(_) => (
            "the database did not answer the close in time: what was answered is stored",
            false,
        ),
    };
    // The spans of the last requests go to the collector (`otel`): blocking, off the workers.
    let _ = tokio::task::spawn_blocking(netapi_chat::logging::shutdown).await;
    let _ = writeln!(
        std::io::stdout(),
        "netapi-chat: {signal}: stopped in {:.2} s ({outcome}; {store_state})",
        started.elapsed().as_secs_f64()
    );
    if !closed {
        // The runtime's drop would wait for the store thread, still waiting on the database.
        std::process::exit(0);
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(args: &[&str]) -> Result<Tokens, String> {
        let cli = Cli::try_parse_from(["netapi-chat", "tokens"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        match cli.command {
            Some(Command::Tokens(t)) => Ok(t),
            _ => Err("not a tokens command".to_owned()),
        }
    }

    /// A token beginning with `-` (one in 64 generated ones) is a value for `revoke`, also
    /// before a global option; `-` alone still reads stdin. `add` takes one after `--`, and
    /// the options after its users stay options (the diff review: hyphen values there took
    /// `--config FILE` for two users).
    #[test]
    fn tokens_beginning_with_a_hyphen_are_values() {
        assert!(matches!(
            tokens(&["revoke", "-zAbc"]),
            Ok(Tokens::Revoke { token }) if token == "-zAbc"
        ));
        assert!(matches!(
            tokens(&["revoke", "-zAbc", "--config", "f.toml"]),
            Ok(Tokens::Revoke { token }) if token == "-zAbc"
        ));
        assert!(matches!(
            tokens(&["revoke", "-"]),
            Ok(Tokens::Revoke { token }) if token == "-"
        ));
        assert!(matches!(
            tokens(&["add", "--", "-zAbc", "tel:+1", "*"]),
            Ok(Tokens::Add { generate: false, args }) if args == ["-zAbc", "tel:+1", "*"]
        ));
        assert!(matches!(
            tokens(&["add", "--generate", "tel:+1", "--config", "f.toml"]),
            Ok(Tokens::Add { generate: true, args }) if args == ["tel:+1"]
        ));
        assert!(matches!(
            tokens(&["add", "TOKEN", "tel:+1", "--generate"]),
            Ok(Tokens::Add { generate: true, args }) if args == ["TOKEN", "tel:+1"]
        ));
    }
}
