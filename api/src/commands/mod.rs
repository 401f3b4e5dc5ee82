//! One module per subcommand; each returns the process exit code.

pub mod keygen;
pub mod probe;
pub mod serve;
pub mod sign;
pub mod verify;

/// `hash-password`: the first line of standard input, hashed (the password never appears in a process list).
pub fn hash_password() -> anyhow::Result<std::process::ExitCode> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    println!("{}", signer_auth::basic::hash_password(password));
    Ok(std::process::ExitCode::SUCCESS)
}
