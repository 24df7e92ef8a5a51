package ratelimit

import (
	"bytes"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func codecRequests() map[string]*rlsv3.RateLimitRequest {
	entry := func(k, v string) *ratelimitv3.RateLimitDescriptor_Entry {
		return &ratelimitv3.RateLimitDescriptor_Entry{Key: k, Value: v}
	}
	return map[string]*rlsv3.RateLimitRequest{
		"empty":        {},
		"subscription": rlReq("4f9e2c1a-0000-4000-8000-000000000007", "Gold"),
		"several, hits": {Domain: Domain, HitsAddend: 3, Descriptors: []*ratelimitv3.RateLimitDescriptor{
			{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry(KeyAPI, "api-1"), entry(KeyAPITier, "10KPerMin")}},
			{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry(KeyBandwidth, BandwidthSubscription+CustomKeySep+"sub-1"+CustomKeySep+CustomKeySep+"1KB")}, HitsAddend: wrapperspb.UInt64(1 << 40)},
			{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry("", "")}, HitsAddend: wrapperspb.UInt64(0), IsNegativeHits: true},
		}},
		"unicode": {Domain: "café ☕", Descriptors: []*ratelimitv3.RateLimitDescriptor{{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry("ünï", "☕")}}}},
		// Not handled by hand: the generic decoder takes them.
		"limit override": {Domain: Domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: []*ratelimitv3.RateLimitDescriptor_Entry{entry(KeyAPI, "a")},
			Limit:   &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 5, Unit: typev3.RateLimitUnit_MINUTE},
		}}},
	}
}

// The hand decoder and grpc-go's agree on every request, whether the hand
// one handles it or hands it on.
func TestCodecDecodes(t *testing.T) {
	for name, want := range codecRequests() {
		t.Run(name, func(t *testing.T) {
			b, err := proto.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			got := &rlsv3.RateLimitRequest{}
			if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("decoded %v, want %v", got, want)
			}
		})
	}
}

// FuzzCodecDecode: on any bytes, the hand decoder fails where grpc-go's
// does, and agrees with it where it succeeds.
func FuzzCodecDecode(f *testing.F) {
	for _, r := range codecRequests() {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x02, 0xff, 0xfe}) // a domain that is not UTF-8
	f.Add([]byte{0x12, 0x05, 0x0a, 0x03, 0x0a, 0x01})
	f.Add([]byte{0x18, 0x80})
	// A descriptor's hits_addend twice, the second empty: proto merges.
	f.Add([]byte{0x12, 0x06, 0x1a, 0x02, 0x08, 0x07, 0x1a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		want := &rlsv3.RateLimitRequest{}
		wantErr := proto.Unmarshal(b, want)
		got := &rlsv3.RateLimitRequest{}
		err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bytes.Clone(b))}, got)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("Unmarshal = %v, proto.Unmarshal = %v", err, wantErr)
		}
		if err == nil && !proto.Equal(got, want) {
			t.Fatalf("decoded %v, proto decodes %v", got, want)
		}
	})
}

// The hand encoder writes what proto.Marshal writes, byte for byte, and
// hands on what it does not handle.
func TestCodecEncodes(t *testing.T) {
	limit := &rlsv3.RateLimitResponse_RateLimit{Name: "Gold", RequestsPerUnit: 5000, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE}
	status := func(code rlsv3.RateLimitResponse_Code, remaining uint32, reset time.Duration) *rlsv3.RateLimitResponse_DescriptorStatus {
		return &rlsv3.RateLimitResponse_DescriptorStatus{Code: code, CurrentLimit: limit, LimitRemaining: remaining, DurationUntilReset: durationpb.New(reset)}
	}
	ok, over := rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT
	for name, r := range map[string]*rlsv3.RateLimitResponse{
		"empty":               {},
		"ok":                  {OverallCode: ok, Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{status(ok, 4999, 30*time.Second)}},
		"unlimited, no limit": {OverallCode: ok, Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{Code: ok}}},
		"over, with body": {
			OverallCode:          over,
			Statuses:             []*rlsv3.RateLimitResponse_DescriptorStatus{status(ok, 3, time.Hour), status(over, 0, 1500*time.Millisecond)},
			ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "retry-after", Value: "2"}, {Key: "content-type", Value: "application/json"}},
			RawBody:              []byte(`{"code":"900804","message":"Message throttled out"}`),
		},
		"negative reset": {OverallCode: ok, Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{status(ok, 1, -1500*time.Millisecond)}},
		// Handed on.
		"metadata": {OverallCode: ok, DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewStringValue("b")}}},
		"multiplier": {OverallCode: ok, Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{
			Code: ok, CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{Name: "x", UnitMultiplier: wrapperspb.UInt32(5)},
		}}},
		"raw header": {OverallCode: ok, ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "x", RawValue: []byte("y")}}},
	} {
		t.Run(name, func(t *testing.T) {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			data, err := (Codec{}).Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if got := data.Materialize(); !bytes.Equal(got, want) {
				t.Errorf("encoded %x\nproto      %x", got, want)
			}
		})
	}
	// A string proto.Marshal refuses is refused too, not sent.
	bad := &rlsv3.RateLimitResponse{Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{Name: "\xff"}}}}
	if _, err := (Codec{}).Marshal(bad); err == nil {
		t.Error("a limit name that is not UTF-8 was encoded")
	}
}
