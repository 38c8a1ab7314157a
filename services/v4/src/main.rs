//! `v4`: the user's entry point to the DeepSeek-V4 stack.
//!
//! Subcommands: `serve` (the all-in-one mesh), `info`, `logits`, `generate`, `init`, `bench`,
//! `tokenize`, `chat encode|parse`.

mod admin;
mod bench;
mod chat_encode_cmd;
mod chat_parse_cmd;
mod commands;
mod config_docs;
mod jsonl;
mod serve;
mod tokenize_cmd;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "v4", version, about = "DeepSeek-V4 serving stack")]
struct Cli {
    /// Worker threads for the CPU engine (0 = one per core).
    #[arg(long, global = true, env = "V4_THREADS", default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model from its config.json: layers by type, parameters, KV bytes per token.
    Info {
        /// Model directory (or its config.json).
        #[arg(long)]
        model: PathBuf,
    },
    /// Full-sequence forward; writes F32 logits [L, vocab] under the key `logits`.
    Logits {
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated token ids.
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Also write the MTP block's logits under `mtp_logits` ([L-1, vocab]).
        #[arg(long)]
        mtp: bool,
    },
    /// Generate on the incremental path; prints the new ids comma-separated on one line.
    Generate(commands::GenerateArgs),
    /// Serve DeepSeek's OpenAI and Anthropic APIs: tokenizer, scheduler, decode workers and
    /// gateway in one process (no arguments: a generated demo model, offline).
    Serve(serve::ServeArgs),
    /// Write a random model in the official checkpoint layout (offline).
    Init {
        /// tiny (fixture-sized), small (real vocabulary, for the demo), bench (benchmark size).
        #[arg(long, default_value = "small")]
        preset: v4_engine::init::Preset,
        #[arg(long)]
        out: PathBuf,
        /// bf16, or fp8 for the official FP8 linears + FP4 experts layout.
        #[arg(long, default_value = "bf16")]
        format: v4_engine::init::WeightFormat,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Largest shard size in MiB.
        #[arg(long, default_value_t = 2048)]
        shard_mib: u64,
    },
    /// Prefill and decode throughput, weight bytes per token and memory bandwidth use.
    Bench(BenchCli),
    /// Chat protocol filters (JSON lines on stdin -> JSON lines on stdout).
    Chat {
        #[command(subcommand)]
        command: ChatCommand,
    },
    /// The ledger: tenants, API keys, prices, credits, balances, usage.
    Admin(admin::AdminArgs),
    /// Configuration of the services.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Tokenizer filter: `{"id","kind":"encode","text"}` or `{"id","kind":"decode","ids"}` lines.
    Tokenize {
        /// tokenizer.json, a model directory holding one, or a Hugging Face repo id
        /// (e.g. deepseek-ai/DeepSeek-V4-Flash; HF_HOME / HF_TOKEN / HF_HUB_OFFLINE honoured).
        #[arg(long)]
        tokenizer: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print docs/CONFIG.md (every key of every service, generated from the code).
    Docs,
}

#[derive(Subcommand)]
enum ChatCommand {
    /// `{"id","input":{"messages","kwargs"}}` -> `{"id","prompt","token_ids"}` or `{"id","error"}`.
    Encode {
        /// tokenizer.json, a model directory or a Hugging Face repo id.
        #[arg(long)]
        tokenizer: String,
    },
    /// `{"id","input":{"text","thinking_mode"}}` -> `{"id","expected":{...}}` or `{"id","error"}`.
    Parse {
        /// tokenizer.json, a model directory or a Hugging Face repo id.
        #[arg(long)]
        tokenizer: String,
    },
}

#[derive(Args)]
struct BenchCli {
    #[command(flatten)]
    args: bench::BenchArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    v4_engine::alloc::keep_freed_memory();
    rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads)
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot start {} worker threads: {e}", cli.threads))?;
    match cli.command {
        Command::Info { model } => commands::info(&model),
        Command::Logits {
            model,
            ids,
            out,
            mtp,
        } => commands::logits(&model, &ids, &out, mtp),
        Command::Generate(args) => commands::generate(&args),
        Command::Serve(args) => serve::serve(&args),
        Command::Admin(args) => admin::run(&args),
        Command::Config {
            command: ConfigCommand::Docs,
        } => {
            print!("{}", config_docs::config_markdown());
            Ok(())
        }
        Command::Init {
            preset,
            out,
            format,
            seed,
            shard_mib,
        } => commands::init(preset, &out, format, seed, shard_mib),
        Command::Bench(b) => bench::run(&b.args),
        Command::Chat {
            command: ChatCommand::Encode { tokenizer },
        } => chat_encode_cmd::run(&tokenizer_file(&tokenizer)?),
        Command::Chat {
            command: ChatCommand::Parse { tokenizer },
        } => chat_parse_cmd::run(&tokenizer_file(&tokenizer)?),
        Command::Tokenize { tokenizer } => tokenize_cmd::run(&tokenizer_file(&tokenizer)?),
    }
}

/// `tokenizer.json` for a `--tokenizer` spec: a file, a directory holding one, or a Hugging Face
/// repo id (fetched into the hub cache; the `HF_*` variables are read here, once).
fn tokenizer_file(spec: &str) -> anyhow::Result<PathBuf> {
    let opts = v4_hub::HubOptions::from_env();
    v4_hub::resolve_file_blocking(spec, "tokenizer.json", &opts)
        .map_err(|e| anyhow::anyhow!("--tokenizer {spec}: {e}"))
}
