package tenantplugin

// CallsRunning is how many plugin calls hold one of the server's call
// slots now (for tests).
func (m *Manager) CallsRunning() int {
	all, _ := m.running.InUse("")
	return all
}
