//! Which rank of which job this process is, from its launcher's environment: torchrun's (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) or SLURM's (`SLURM_PROCID`,
//! `SLURM_NTASKS`, `SLURM_LOCALID`, the first host of `SLURM_NODELIST`, and `MASTER_PORT` if set).
//! torchrun's variables win when both are present (torchrun under `srun`).

/// Where this process sits in a launched job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// Which launcher said so (`torchrun` or `SLURM`), for messages.
    pub by: &'static str,
    pub rank: usize,
    pub world: usize,
    /// This process's rank on its node (which GPU it would take).
    pub local_rank: usize,
    /// Rank 0's host and port: where the ranks meet.
    pub master_addr: String,
    pub master_port: u16,
}

/// The port the ranks meet on when the launcher names none (torchrun's default).
pub const DEFAULT_PORT: u16 = 29500;

/// A launcher's environment that does not describe a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    #[error("{var}={value}: not a {what}")]
    Value { var: &'static str, value: String, what: &'static str },
    #[error("{by}: {var} is not set")]
    Missing { by: &'static str, var: &'static str },
    #[error("{by}: rank {rank} of a world of {world}")]
    Rank { by: &'static str, rank: usize, world: usize },
}

/// This process's place in a launched job, read through `var` (the environment: `std::env::var`),
/// or `None` when no launcher set the variables (or it launched a job of one process).
pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launched>, LaunchError> {
    let num = |name: &'static str, what: &'static str| -> Result<Option<usize>, LaunchError> {
        var(name)
            .map(|v| v.trim().parse::<usize>().map_err(|_| LaunchError::Value { var: name, value: v, what }))
            .transpose()
    };
    let port = || -> Result<u16, LaunchError> {
        match var("MASTER_PORT") {
            None => Ok(DEFAULT_PORT),
            Some(v) => v.trim().parse().map_err(|_| LaunchError::Value { var: "MASTER_PORT", value: v, what: "port" }),
        }
    };
    let l = if let Some(world) = num("WORLD_SIZE", "count")? {
        let by = "torchrun";
        let rank = num("RANK", "rank")?.ok_or(LaunchError::Missing { by, var: "RANK" })?;
        let master_addr = var("MASTER_ADDR").ok_or(LaunchError::Missing { by, var: "MASTER_ADDR" })?;
        Launched {
            by,
            rank,
            world,
            local_rank: num("LOCAL_RANK", "rank")?.unwrap_or(0),
            master_addr,
            master_port: port()?,
        }
    } else if let Some(world) = num("SLURM_NTASKS", "count")? {
        let by = "SLURM";
        let rank = num("SLURM_PROCID", "rank")?.ok_or(LaunchError::Missing { by, var: "SLURM_PROCID" })?;
        let list = var("SLURM_NODELIST")
            .or_else(|| var("SLURM_JOB_NODELIST"))
            .ok_or(LaunchError::Missing { by, var: "SLURM_NODELIST" })?;
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| first_host(&list));
        Launched {
            by,
            rank,
            world,
            local_rank: num("SLURM_LOCALID", "rank")?.unwrap_or(0),
            master_addr,
            master_port: port()?,
        }
    } else {
        return Ok(None);
    };
    if l.world == 0 || l.rank >= l.world {
        return Err(LaunchError::Rank { by: l.by, rank: l.rank, world: l.world });
    }
    Ok((l.world > 1).then_some(l))
}

/// The first host of a SLURM host list: `gpu[003-010,012],cpu1` → `gpu003`; `node7,node8` →
/// `node7`.
pub fn first_host(list: &str) -> String {
    let list = list.trim();
    let mut depth = 0;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map_or(list.len(), |(i, _)| i);
    let first = &list[..end];
    match first.split_once('[') {
        None => first.to_string(),
        Some((prefix, rest)) => {
            let range = rest.trim_end_matches(']');
            let lowest = range.split([',', '-']).next().unwrap_or("");
            format!("{prefix}{lowest}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn torchrun_and_slurm_environments() {
        let t = [
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29400"),
        ];
        let l = from_env(env(&t)).unwrap().unwrap();
        assert_eq!(
            (l.by, l.rank, l.world, l.local_rank, l.master_addr.as_str(), l.master_port),
            ("torchrun", 3, 4, 1, "10.0.0.1", 29400)
        );
        let s = [
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "5"),
            ("SLURM_NODELIST", "gpu[003-010,012],cpu1"),
        ];
        let l = from_env(env(&s)).unwrap().unwrap();
        assert_eq!(
            (l.by, l.rank, l.world, l.local_rank, l.master_addr.as_str(), l.master_port),
            ("SLURM", 5, 16, 5, "gpu003", DEFAULT_PORT)
        );
        assert_eq!(from_env(env(&[])).unwrap(), None);
        assert_eq!(from_env(env(&[("WORLD_SIZE", "1"), ("RANK", "0"), ("MASTER_ADDR", "h")])).unwrap(), None);
    }

    #[test]
    fn a_broken_environment_is_named() {
        let e = from_env(env(&[("WORLD_SIZE", "two")])).unwrap_err();
        assert_eq!(e.to_string(), "WORLD_SIZE=two: not a count");
        let e = from_env(env(&[("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")])).unwrap_err();
        assert_eq!(e.to_string(), "torchrun: RANK is not set");
        let e = from_env(env(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "h")])).unwrap_err();
        assert_eq!(e.to_string(), "torchrun: rank 2 of a world of 2");
    }

    #[test]
    fn first_hosts_of_slurm_lists() {
        for (list, want) in [
            ("node7", "node7"),
            ("node7,node8", "node7"),
            ("gpu[003-010,012],cpu1", "gpu003"),
            ("a[1,4]", "a1"),
            ("x-1[07-09]", "x-107"),
        ] {
            assert_eq!(first_host(list), want, "{list}");
        }
    }
}
