package main

import (
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// server.rate_refusal_delay: default 100ms; a duration as given; 0 in the
// config turns the hold off (a negative server.Config value, since 0 there
// means the default).
func TestServeRateRefusalDelaySetting(t *testing.T) {
	for _, tc := range []struct {
		raw  any
		want time.Duration
	}{{nil, 100 * time.Millisecond}, {"250ms", 250 * time.Millisecond}, {"1s", time.Second}, {"0", -1}, {0, -1}} {
		a := &app{v: viper.New()}
		bindServerSettings(pflag.NewFlagSet("serve", pflag.ContinueOnError), a.v)
		if tc.raw != nil {
			a.v.Set("server.rate_refusal_delay", tc.raw)
		}
		cfg, err := a.serverConfig("")
		if err != nil {
			t.Fatalf("%v: %v", tc.raw, err)
		}
		if cfg.RateRefusalDelay != tc.want {
			t.Fatalf("server.rate_refusal_delay %v: got %v, want %v", tc.raw, cfg.RateRefusalDelay, tc.want)
		}
	}
}
