# Unit tests for write.rego: batpak policy test examples/policies
package batpak.write_test

import data.batpak.write

# --- fixtures ---

clerk := {"id": "u-ada", "tenant": "acme", "roles": ["clerk"]}

cashier := {"id": "u-grace", "tenant": "acme", "roles": ["cashier"]}

manager := {"id": "u-linus", "tenant": "globex", "roles": ["manager"]}

order := {
	"order": "acme:order:1",
	"customer": "cust-ada",
	"items": [{"sku": "BAT-AA-4", "name": "AA batteries, 4-pack", "qty": 2, "price_cents": 499}],
	"total_cents": 998,
	"currency": "EUR",
}

payment := {"order": "acme:order:1", "amount_cents": 998, "currency": "EUR", "method": "card"}

shipment := {"order": "acme:order:1", "carrier": "DHL", "tracking": "DH0000007919"}

# doc is the input document the store builds for a plain append.
doc(principal, entity, kind, payload) := {
	"action": "append",
	"principal": principal,
	"event": {
		"entity": entity,
		"scope": "shop",
		"kind": kind,
		"category": 1,
		"type": 1,
		"payload": payload,
		"correlation_id": "0197a2c4-5e1f-7a3b-9c2d-4e6f8a0b1c2d",
		"causation_id": null,
		"idempotency_key": null,
		"expected_clock": null,
	},
	"batch": null,
	"entity": {"exists": false, "clock": 0},
	"plugin": null,
	"maintenance": null,
}

place(principal, payload) := doc(principal, concat(":", [principal.tenant, "order:1"]), "0x1:0x1", payload)

# an order of one item line of qty × price
order_of(qty, price) := object.union(order, {
	"items": [{"sku": "BAT-9V-2", "name": "9V batteries, 2-pack", "qty": qty, "price_cents": price}],
	"total_cents": qty * price,
})

reasons(req) := r if {
	r := write.deny with input as req
}

codes(req) := {x.code | some x in reasons(req)}

allowed(req) if {
	write.allow with input as req
	count(reasons(req)) == 0
}

denied_only(req, code) if {
	codes(req) == {code}
	not write.allow with input as req
}

# --- allowed writes ---

test_clerk_places_order if {
	allowed(place(clerk, order))
}

test_clerk_ships_order if {
	allowed(doc(clerk, "acme:order:1", "0x1:0x2", shipment))
}

test_cashier_captures_payment if {
	allowed(doc(cashier, "acme:payment:1", "0x2:0x1", payment))
}

test_manager_kind_wildcards if {
	allowed(doc(manager, "globex:order:9", "0x1:0x2", shipment))
	allowed(doc(manager, "globex:payment:9", "0x2:0x1", object.union(payment, {"currency": "USD"})))
}

test_any_role_of_several_suffices if {
	allowed(place({"id": "u-ken", "tenant": "acme", "roles": ["auditor", "cashier", "clerk"]}, order))
}

test_order_at_tenant_limit if {
	allowed(place(manager, order_of(1, 20000)))
}

test_largest_order if {
	items := [{"sku": sprintf("S-%d", [i]), "name": "x", "qty": 1, "price_cents": 100} | some i in numbers.range(1, 20)]
	allowed(place(clerk, object.union(order, {"items": items, "total_cents": 2000})))
}

test_note_at_limit if {
	allowed(place(clerk, object.union(order, {"note": concat("", [x | some _ in numbers.range(1, 280); x := "n"])})))
}

test_decision_document if {
	d := write with input as place(clerk, order)
	d.allow == true
	d.deny == set()
}

# --- who ---

test_deny_without_principal if {
	req := place({"id": "", "tenant": "", "roles": []}, order)
	"NO_PRINCIPAL" in codes(req)
	not write.allow with input as req
}

test_deny_principal_without_id if {
	"NO_PRINCIPAL" in codes(place({"id": "", "tenant": "acme", "roles": ["clerk"]}, order))
}

test_deny_unknown_tenant if {
	denied_only(doc({"id": "u-bill", "tenant": "initech", "roles": ["clerk"]}, "initech:order:1", "0x1:0x2", shipment), "UNKNOWN_TENANT")
}

# --- where ---

test_deny_other_tenants_entity if {
	req := doc(clerk, "globex:order:1", "0x1:0x2", shipment)
	denied_only(req, "TENANT_MISMATCH")
	some r in reasons(req)
	r == {
		"code": "TENANT_MISMATCH",
		"message": `tenant "acme" may write only entities prefixed "acme:", not "globex:order:1"`,
		"tenant": "acme",
		"entity": "globex:order:1",
	}
}

test_deny_unprefixed_entity if {
	denied_only(doc(clerk, "order:1", "0x1:0x2", shipment), "TENANT_MISMATCH")
}

test_deny_lookalike_prefix if {
	denied_only(doc(clerk, "acme-evil:order:1", "0x1:0x2", shipment), "TENANT_MISMATCH")
	denied_only(doc(clerk, "acme", "0x1:0x2", shipment), "TENANT_MISMATCH")
}

# --- what ---

test_deny_kind_not_allowed_for_role if {
	req := place(cashier, order)
	denied_only(req, "KIND_NOT_ALLOWED")
	some r in reasons(req)
	r.kind == "0x1:0x1"
	r.roles == ["cashier"]
}

test_deny_without_roles if {
	denied_only(place({"id": "u-ada", "tenant": "acme", "roles": []}, order), "KIND_NOT_ALLOWED")
}

test_unknown_role_grants_nothing if {
	denied_only(place({"id": "u-ada", "tenant": "acme", "roles": ["superuser"]}, order), "KIND_NOT_ALLOWED")
}

test_wildcard_covers_one_category_only if {
	denied_only(doc(manager, "globex:customer:1", "0x3:0x1", {}), "KIND_NOT_ALLOWED")
}

# --- orders ---

test_deny_zero_total if {
	denied_only(place(clerk, object.union(order, {"total_cents": 0})), "INVALID_TOTAL")
}

test_deny_negative_total if {
	denied_only(place(clerk, object.union(order, {"total_cents": -998})), "INVALID_TOTAL")
}

test_deny_fractional_total if {
	denied_only(place(clerk, object.union(order, {"total_cents": 998.5})), "INVALID_TOTAL")
}

test_deny_string_total if {
	denied_only(place(clerk, object.union(order, {"total_cents": "998"})), "INVALID_TOTAL")
}

test_deny_missing_total if {
	denied_only(place(clerk, object.remove(order, {"total_cents"})), "INVALID_TOTAL")
}

test_deny_payload_not_an_object if {
	codes(place(clerk, [1, 2, 3])) == {"INVALID_TOTAL", "NO_ITEMS", "CURRENCY_NOT_ALLOWED"}
}

test_deny_over_tenant_limit if {
	req := place(manager, order_of(1, 20001))
	denied_only(req, "ORDER_OVER_LIMIT")
	some r in reasons(req)
	r.limit == 20000
}

test_limit_is_per_tenant if {
	# what globex may not, acme may (limit 500000)
	allowed(place(clerk, order_of(5, 20000)))
	denied_only(place(manager, order_of(5, 20000)), "ORDER_OVER_LIMIT")
}

test_limit_comes_from_data if {
	not write.allow with input as place(clerk, order)
		with data.batpak.shop.tenants.acme.max_order_cents as 500
}

test_deny_total_mismatch if {
	req := place(clerk, object.union(order, {"total_cents": 999}))
	denied_only(req, "TOTAL_MISMATCH")
	some r in reasons(req)
	r.items_cents == 998
}

test_deny_missing_items if {
	denied_only(place(clerk, object.remove(order, {"items"})), "NO_ITEMS")
}

test_deny_empty_items if {
	denied_only(place(clerk, object.union(order, {"items": []})), "NO_ITEMS")
}

test_deny_too_many_items if {
	items := [{"sku": "S", "name": "x", "qty": 1, "price_cents": 100} | some _ in numbers.range(1, 21)]
	req := place(clerk, object.union(order, {"items": items, "total_cents": 2100}))
	denied_only(req, "TOO_MANY_ITEMS")
	some r in reasons(req)
	r.message == "an order has at most 20 items, this one has 21"
}

test_deny_invalid_item if {
	req := place(clerk, object.union(order, {"items": [{"sku": "S", "qty": 0, "price_cents": 998}]}))
	denied_only(req, "INVALID_ITEM")
	some r in reasons(req)
	r.field == "items[0]"
}

test_deny_note_too_long if {
	note := concat("", [x | some _ in numbers.range(1, 281); x := "n"])
	denied_only(place(clerk, object.union(order, {"note": note})), "NOTE_TOO_LONG")
}

test_deny_currency_not_allowed if {
	req := place(clerk, object.union(order, {"currency": "USD"}))
	denied_only(req, "CURRENCY_NOT_ALLOWED")
	some r in reasons(req)
	r.message == `tenant "acme" trades in ["EUR"], not "USD"`
}

test_deny_missing_currency if {
	req := place(clerk, object.remove(order, {"currency"}))
	denied_only(req, "CURRENCY_NOT_ALLOWED")
	some r in reasons(req)
	r.message == `tenant "acme" trades in ["EUR"], not null`
}

# --- payments ---

test_deny_invalid_payment_amount if {
	denied_only(doc(cashier, "acme:payment:1", "0x2:0x1", object.union(payment, {"amount_cents": -1})), "INVALID_AMOUNT")
	denied_only(doc(cashier, "acme:payment:1", "0x2:0x1", object.remove(payment, {"amount_cents"})), "INVALID_AMOUNT")
}

# --- every reason at once ---

test_every_reason_is_reported if {
	req := doc(cashier, "globex:order:1", "0x1:0x1", object.union(order, {"total_cents": 0, "currency": "GBP"}))
	codes(req) == {"TENANT_MISMATCH", "KIND_NOT_ALLOWED", "INVALID_TOTAL", "CURRENCY_NOT_ALLOWED"}
}

test_reasons_are_objects_with_code_and_message if {
	req := doc(cashier, "globex:order:1", "0x1:0x1", object.union(order, {"total_cents": 0, "currency": "GBP"}))
	every r in reasons(req) {
		is_string(r.code)
		is_string(r.message)
		r.message != ""
	}
}

# --- plugins ---

acme_admin := {"id": "u-ops", "tenant": "acme", "roles": ["admin"]}

globex_admin := {"id": "u-gops", "tenant": "globex", "roles": ["admin"]}

globex_clerk := {"id": "u-bob", "tenant": "globex", "roles": ["clerk"]}

auto_ship := {"name": "auto-ship", "version": "1.0.0", "digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}

# by_plugin is a plugin's write: the principal that loaded it, and the plugin.
by_plugin(principal, plugin, entity) := object.union(doc(principal, entity, "0x1:0x2", shipment), {"action": "plugin", "plugin": plugin})

test_tenants_plugin_writes_into_its_tenant if {
	allowed(by_plugin(clerk, auto_ship, "acme:order:1"))
}

test_tenants_plugin_cannot_write_into_another_tenant if {
	denied_only(by_plugin(clerk, auto_ship, "globex:order:1"), "TENANT_MISMATCH")
}

test_plugin_of_another_tenant_is_told_apart if {
	# The same plugin loaded for globex, which has not taken it on.
	denied_only(by_plugin(globex_clerk, auto_ship, "globex:order:1"), "PLUGIN_NOT_ALLOWED")
	allowed(by_plugin(globex_clerk, object.union(auto_ship, {"name": "shipper"}), "globex:order:1"))
}

test_plugin_write_without_tenant if {
	# A plugin loaded for nobody (plugins.Host.Load) writes as plugin:NAME.
	req := by_plugin({"id": "plugin:auto-ship", "tenant": "", "roles": ["plugin"]}, auto_ship, "acme:order:1")
	"NO_PRINCIPAL" in codes(req)
	not write.allow with input as req
}

test_plugin_write_must_name_its_plugin if {
	denied_only(by_plugin(clerk, null, "acme:order:1"), "NO_PLUGIN")
	denied_only(by_plugin(clerk, object.union(auto_ship, {"name": ""}), "acme:order:1"), "NO_PLUGIN")
}

test_plugin_writes_with_the_loaders_roles if {
	# Loaded by a cashier, it may not write shipments (0x1:0x2).
	denied_only(by_plugin(cashier, auto_ship, "acme:order:1"), "KIND_NOT_ALLOWED")
}

# --- system records ---

test_application_system_record_denied if {
	req := object.union(doc(acme_admin, "batpak:audit:bypass", "0x0:0x1", {}), {"action": "system"})
	"SYSTEM_WRITE" in codes(req)
	not write.allow with input as req
}

# --- destructive operations ---

# maint is the input of a destructive operation.
maint(principal, action, m) := {
	"action": action,
	"principal": principal,
	"event": {"entity": "", "scope": "", "kind": "", "category": 0, "type": 0, "payload": null, "correlation_id": null, "causation_id": null, "idempotency_key": null, "expected_clock": null},
	"batch": null,
	"entity": {"exists": false, "clock": 0},
	"plugin": null,
	"maintenance": object.union({"reason": "GDPR request 17", "ids": [], "entity": "", "entities": {}, "compact": null, "events_erased": 0, "events_removed": 0, "segments": 0}, m),
}

redact_globex := {"ids": ["0197a2c4-5e1f-7a3b-9c2d-4e6f8a0b1c2d"], "entity": "globex:order:7", "entities": {"globex:order:7": 1}, "events_erased": 1}

test_admin_redacts_own_tenant if {
	allowed(maint(globex_admin, "redact", redact_globex))
	allowed(maint(globex_admin, "erase", redact_globex))
}

test_clerk_cannot_redact if {
	denied_only(maint(globex_clerk, "redact", redact_globex), "MAINTENANCE_NOT_ALLOWED")
}

test_other_tenant_cannot_redact if {
	denied_only(maint(acme_admin, "redact", redact_globex), "TENANT_MISMATCH")
	codes(maint(clerk, "redact", redact_globex)) == {"MAINTENANCE_NOT_ALLOWED", "TENANT_MISMATCH"}
}

test_erase_of_another_tenants_empty_entity if {
	# Nothing to erase yet, but the entity named is globex's.
	denied_only(maint(acme_admin, "erase", {"entity": "globex:customer:1"}), "TENANT_MISMATCH")
}

test_redact_needs_a_reason if {
	denied_only(maint(globex_admin, "redact", object.union(redact_globex, {"reason": ""})), "NO_REASON")
}

test_compact_own_tenant if {
	allowed(maint(acme_admin, "compact", {"reason": "", "compact": {"merge": true, "max_age_seconds": 0, "max_per_entity": 0, "keep": false, "tombstone": false}}))
	allowed(maint(acme_admin, "compact", {"entities": {"acme:order:1": 3, "acme:order:2": 1}, "events_removed": 4}))
}

test_compact_touching_another_tenant if {
	req := maint(acme_admin, "compact", {"entities": {"acme:order:1": 3, "globex:order:2": 1}, "events_removed": 4})
	denied_only(req, "TENANT_MISMATCH")
	some r in reasons(req)
	r.entity == "globex:order:2"
}

test_compact_needs_admin if {
	denied_only(maint(clerk, "compact", {}), "MAINTENANCE_NOT_ALLOWED")
}

test_maintenance_without_principal if {
	req := maint({"id": "", "tenant": "", "roles": []}, "compact", {})
	codes(req) == {"NO_PRINCIPAL", "MAINTENANCE_NOT_ALLOWED"}
}
