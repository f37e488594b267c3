// Package metricpb holds the code protoc generates from metric.proto.
package metricpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative metric.proto
