//! What a runner task used of its size (CPU and memory, sampled by `tasuki-boot` from the ECS task
//! metadata endpoint), and whether a workflow's jobs fit the size they asked for.
