package server

import "github.com/batpak-go/batpak/core"

// JoinRedirect is the redirect rule of a node's join requests.
var JoinRedirect = joinRedirect

// ClusterSystemStore is a cluster node's replicated system store.
func (s *Server) ClusterSystemStore() *core.Store { return s.node.sys }
