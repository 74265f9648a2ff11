package server

// JoinRedirect is the redirect rule of a node's join requests.
var JoinRedirect = joinRedirect
