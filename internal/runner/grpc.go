package runner

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GRPCRecovery returns server options under which a panicking gRPC handler
// fails its call with Internal, logged with its stack and counted in panics
// (nil: not counted), instead of ending the process: grpc-go does not
// recover handlers' panics itself.
func GRPCRecovery(component string, log zerolog.Logger, panics *prometheus.CounterVec) []grpc.ServerOption {
	var counter prometheus.Counter
	if panics != nil {
		counter = panics.WithLabelValues(component)
	}
	recovered := func(method string, v any) error {
		if counter != nil {
			counter.Inc()
		}
		log.Error().Str("method", method).Str("panic", fmt.Sprint(v)).Str("stack", string(debug.Stack())).Msg("gRPC handler panicked")
		return status.Error(codes.Internal, "internal error")
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			defer func() {
				if v := recover(); v != nil {
					resp, err = nil, recovered(info.FullMethod, v)
				}
			}()
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = recovered(info.FullMethod, v)
				}
			}()
			return h(srv, ss)
		}),
	}
}
