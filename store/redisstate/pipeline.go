package redisstate

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// scriptCall is one run of a script: the script, its keys and arguments.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
}

// run runs the call on its own (EVALSHA, loading the script when Redis
// does not have it).
func (c scriptCall) run(ctx context.Context, r redis.Scripter) *redis.Cmd {
	return c.script.Run(ctx, r, c.keys, c.args...)
}

// evalPipelined runs calls in one pipeline: one round trip to a single
// Redis, one per node at once on Cluster, so calls of different slots
// never depend on each other's order there. A call Redis could not run for
// want of its script (NOSCRIPT: after a restart or SCRIPT FLUSH; the call
// did nothing) runs again on its own, which loads it. Each command carries
// its own reply or error, in the order of calls.
func (s *State) evalPipelined(ctx context.Context, calls ...scriptCall) []*redis.Cmd {
	cmds, _ := s.evalPipelinedReran(ctx, calls...)
	return cmds
}

// evalPipelinedReran is evalPipelined, also reporting which calls ran
// again on their own: those ran after every call of the pipeline, which a
// caller that depends on the calls' order must know.
func (s *State) evalPipelinedReran(ctx context.Context, calls ...scriptCall) ([]*redis.Cmd, []bool) {
	cmds := make([]*redis.Cmd, len(calls))
	reran := make([]bool, len(calls))
	// The pipeline's own error is the first command's error; each command
	// is read below.
	_, _ = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = c.script.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	for i, c := range calls {
		if err := cmds[i].Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			cmds[i] = c.run(ctx, s.c)
			reran[i] = true
		}
	}
	return cmds, reran
}
