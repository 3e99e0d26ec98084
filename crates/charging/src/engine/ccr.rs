//! One CCR on a session (RFC 4006 §5, §6.1): who it is for, retransmissions, the session's
//! Origin-Host and CC-Request-Number, reports checked and settled, then grants; the cached
//! answer sent again.

use super::*;

/// Sends the cached answer again with the retransmission's identifiers.
pub(super) fn replay(out: &mut BytesMut, answer: &[u8], req: &Message, identity: &LocalIdentity) {
    // Kept compact (restored from the journal): rebuilt for this retransmission, which
    // carries the same Session-Id, CC-Request-Type and -Number.
    if session::write_compact(out, answer, req, identity) {
        return;
    }
    let start = out.len();
    out.extend_from_slice(answer);
    if out.len() >= start + 20 {
        out[start + 12..start + 16].copy_from_slice(&req.header.hop_by_hop.to_be_bytes());
        out[start + 16..start + 20].copy_from_slice(&req.header.end_to_end.to_be_bytes());
    }
}

impl Engine {
    pub(super) fn answer_ccr(
        &self,
        identity: &LocalIdentity,
        req: &Message,
        now: i64,
        out: &mut BytesMut,
        rec: &mut Recorder,
    ) {
        let cr = match CreditRequest::read(req) {
            Ok(cr) => cr,
            Err(e) => return identity.write_error_answer(out, req, &e),
        };
        if let Some(e) = cr.duplicate_service(req) {
            return identity.write_error_answer(out, req, &e);
        }
        let mut shard = self.sessions.lock(cr.session_id);
        let held_before = shard.open.get(cr.session_id).map_or(0, |s| s.held.len());
        self.answer_in_shard(identity, req, now, out, rec, &cr, &mut shard);
        shard.settle(cr.session_id, held_before);
    }

    /// [`Self::answer_ccr`] with the session's shard locked.
    #[allow(clippy::too_many_arguments)]
    fn answer_in_shard(
        &self,
        identity: &LocalIdentity,
        req: &Message,
        now: i64,
        out: &mut BytesMut,
        rec: &mut Recorder,
        cr: &CreditRequest<'_>,
        shard: &mut session::ShardMaps,
    ) {
        let seen = match shard.open.get(cr.session_id) {
            Some(s) => Some((
                s.origin_host.clone(),
                s.last_number,
                s.last_type,
                &s.last_answer[..],
                false,
            )),
            None => shard.ended.get(cr.session_id).map(|e| {
                (
                    e.origin_host.clone(),
                    e.last_number,
                    e.last_type,
                    &e.last_answer[..],
                    true,
                )
            }),
        };
        if let Some((origin, last_number, last_type, last_answer, ended)) = seen {
            if !origin.eq_ignore_ascii_case(cr.origin_host) {
                // Another client's session: Session-Ids are unique to the host that made them
                // (RFC 6733 §8.8), so this is neither a retransmission nor this host's session.
                let e = match cr.request_type {
                    RequestType::Update | RequestType::Termination => DiameterError::new(
                        ResultCode::UnknownSessionId,
                        "no credit-control session with this Session-Id from this Origin-Host",
                    ),
                    RequestType::Initial | RequestType::Event => DiameterError::new(
                        ResultCode::InvalidAvpValue,
                        "this Session-Id belongs to a session of another Origin-Host",
                    )
                    .with_avp(copy_of(req, c::SESSION_ID)),
                };
                return identity.write_error_answer(out, req, &e);
            }
            if last_number == cr.request_number && last_type == cr.request_type as u8 {
                // A retransmission (T flag or not): the same answer, charged once.
                rec.replayed = true;
                if last_answer.is_empty() {
                    // Too large to journal, so not kept across a restart.
                    let e = DiameterError::new(
                        ResultCode::UnableToComply,
                        "the answer to this request was not kept across a restart",
                    );
                    return identity.write_error_answer(out, req, &e);
                }
                return replay(out, last_answer, req, identity);
            }
            if !ended && cr.request_type == RequestType::Event {
                // One-time events have Session-Ids of their own (RFC 4006 §5.1): an EVENT on an
                // open session's id is refused whole, or its retransmission would find the
                // session, not the event's answer, and be charged again.
                let e = DiameterError::new(
                    ResultCode::InvalidAvpValue,
                    "this Session-Id is an open credit-control session; an EVENT needs its own",
                )
                .with_avp(copy_of(req, c::CC_REQUEST_TYPE));
                return identity.write_error_answer(out, req, &e);
            }
            if ended && cr.request_type != RequestType::Initial {
                let e = DiameterError::new(
                    ResultCode::UnknownSessionId,
                    "the credit-control session has ended",
                );
                return identity.write_error_answer(out, req, &e);
            }
            if cr.request_number <= last_number || cr.request_type == RequestType::Initial {
                let e = DiameterError::new(
                    ResultCode::InvalidAvpValue,
                    "CC-Request-Number is not after the last one handled",
                )
                .with_avp(copy_of(req, c::CC_REQUEST_NUMBER));
                return identity.write_error_answer(out, req, &e);
            }
        }
        let start = out.len();
        match cr.request_type {
            RequestType::Initial | RequestType::Event => {
                let Some((account, subscriber)) = self.lookup(cr) else {
                    let e = DiameterError::new(
                        ResultCode::UserUnknown,
                        "no subscriber with these Subscription-Ids",
                    );
                    return identity.write_error_answer(out, req, &e);
                };
                if self.accounts.ledger().is_blocked(account) {
                    let e =
                        DiameterError::new(ResultCode::EndUserServiceDenied, explain::why::BLOCKED);
                    return identity.write_error_answer(out, req, &e);
                }
                let mut session = Session {
                    account,
                    origin_host: self.intern_host(cr.origin_host),
                    last_number: cr.request_number,
                    last_type: cr.request_type as u8,
                    last_answer: Vec::new(),
                    held: Vec::new(),
                    deadline: now,
                    terminated: cr.request_type == RequestType::Event,
                    started: now,
                    subscriber,
                    services: Vec::new(),
                };
                if cr.request_type == RequestType::Event {
                    self.event(Reply { identity, req, out }, cr, &mut session, now, rec);
                    session.deadline = now + i64::from(self.linger_s.load(Relaxed));
                    self.record_usage(
                        rec,
                        cr.session_id,
                        &session,
                        &session.services,
                        now,
                        "event",
                        false,
                    );
                } else if let Err(e) =
                    self.session_step(Reply { identity, req, out }, cr, &mut session, now, rec)
                {
                    // Refused before anything was charged: no session.
                    return identity.write_error_answer(out, req, &e);
                }
                session.last_answer = session::kept(&out[start..]);
                if self.journaled {
                    rec.session(cr.session_id, &session, session.terminated);
                }
                if session.terminated {
                    shard.end(cr.session_id, session);
                } else {
                    shard.open.insert(cr.session_id.into(), Box::new(session));
                }
            }
            RequestType::Update | RequestType::Termination => {
                let Some(session) = shard.open.get_mut(cr.session_id) else {
                    let e = DiameterError::new(
                        ResultCode::UnknownSessionId,
                        "no credit-control session with this Session-Id",
                    );
                    return identity.write_error_answer(out, req, &e);
                };
                session.last_number = cr.request_number;
                session.last_type = cr.request_type as u8;
                let before = self
                    .usage
                    .is_some_and(|u| u.interim)
                    .then(|| session.services.clone());
                if let Err(e) =
                    self.session_step(Reply { identity, req, out }, cr, session, now, rec)
                {
                    // Refused whole, nothing charged; the session stays as it was, and a
                    // retransmission gets the same refusal.
                    identity.write_error_answer(out, req, &e);
                    session.last_answer = session::kept(&out[start..]);
                    if self.journaled {
                        rec.session(cr.session_id, session, false);
                    }
                    return;
                }
                session.last_answer = session::kept(&out[start..]);
                if self.journaled {
                    rec.session(cr.session_id, session, session.terminated);
                }
                if session.terminated {
                    log_usage(cr.session_id, session, now, "terminated");
                    self.record_usage(
                        rec,
                        cr.session_id,
                        session,
                        &session.services,
                        now,
                        "terminated",
                        false,
                    );
                    if let Some(s) = shard.open.remove(cr.session_id) {
                        shard.end(cr.session_id, *s);
                    }
                } else if let Some(before) = before {
                    // Interim record: what this update reported.
                    let delta = usage_delta(&before, &session.services);
                    if !delta.is_empty() {
                        self.record_usage(
                            rec,
                            cr.session_id,
                            session,
                            &delta,
                            now,
                            "interim",
                            true,
                        );
                    }
                }
            }
        }
    }

    /// The Origin-Host as a shared string: sessions of one gateway share one copy.
    pub(super) fn intern_host(&self, host: &str) -> Arc<str> {
        if let Some(h) = self
            .hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
        {
            return h.clone();
        }
        let mut hosts = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        // Bounded: a host that sends garbage names cannot grow this without limit.
        if hosts.len() >= MAX_HOSTS {
            return Arc::from(host);
        }
        if let Some(h) = hosts.get(host) {
            return h.clone();
        }
        let h: Arc<str> = Arc::from(host);
        hosts.insert(h.clone());
        h
    }

    /// Refuses a request in which one MSCC reports more than a gateway could have used (the
    /// policy's `max_report`, far above any grant). Checked before anything is charged.
    pub(super) fn check_reports(
        &self,
        cr: &CreditRequest,
        req: &Message,
        s: &Session,
        policy: &Policy,
    ) -> Result<(), DiameterError> {
        const KINDS: [Unit; 3] = [Unit::Octets, Unit::Seconds, Unit::Events];
        for (i, m) in cr.mscc.iter().enumerate() {
            let mut total = [0u64; 3];
            for (j, u) in m.used.iter().enumerate() {
                let this = [
                    u.units.octets().unwrap_or(0),
                    u64::from(u.units.time.unwrap_or(0)),
                    u.units.events.unwrap_or(0),
                ];
                for k in 0..3 {
                    total[k] = total[k].saturating_add(this[k]);
                    if total[k] <= policy.max_report[k] {
                        continue;
                    }
                    warn!(
                        session_id = cr.session_id,
                        subscriber = &*s.subscriber,
                        unit = ?KINDS[k],
                        reported = total[k],
                        bound = policy.max_report[k],
                        "usage report refused: more than a gateway could have used"
                    );
                    self.reports_refused.fetch_add(1, Relaxed);
                    let e = DiameterError::new(
                        ResultCode::InvalidAvpValue,
                        "Used-Service-Unit reports more than a gateway could have used",
                    );
                    return Err(failed_in(
                        e,
                        service_unit(req, cr, i, c::USED_SERVICE_UNIT, j),
                    ));
                }
            }
        }
        Ok(())
    }

    /// INITIAL, UPDATE or TERMINATION on a session: settle reported usage, then grant. `Err`:
    /// refused whole before anything was charged.
    pub(super) fn session_step(
        &self,
        reply: Reply<'_>,
        cr: &CreditRequest,
        s: &mut Session,
        now: i64,
        rec: &mut Recorder,
    ) -> Result<(), DiameterError> {
        let Reply { identity, req, out } = reply;
        let policies = self.accounts.policies();
        let policy = policy_of(&policies, s.account.tree);
        self.check_reports(cr, req, s, policy)?;
        // The rules and guards on the device's path, looked up once for the request.
        let ctx = self.rule_context(cr, s, policy, now);
        let guards = ctx.as_ref().and_then(|c| c.guards);
        if let Some(g) = &guards {
            self.check_ceilings(cr, s, g, now, rec)?;
        }
        // A session keeps (and journals) what each service used: their number is bounded.
        let new_services = cr
            .mscc
            .iter()
            .filter(|m| {
                !s.services.iter().any(|u| {
                    (u.rating_group, u.service_identifier) == (m.rating_group, m.service_identifier)
                })
            })
            .count();
        if s.services.len() + new_services > MAX_SERVICES {
            return Err(DiameterError::new(
                ResultCode::UnableToComply,
                "a session may use at most 1024 services (Rating-Group and Service-Identifier)",
            ));
        }
        let terminating = cr.request_type == RequestType::Termination;
        // Looked up once for the request: it takes the tree's lock.
        let tariff = self.tariff_for(policy, s.account);
        // Where each MSCC goes: the rules matched once per MSCC (none without rules: no
        // allocation on the common path).
        let rules: Vec<Option<&crate::rules::Rule>> = match &ctx {
            Some(c) => cr.mscc.iter().map(|m| c.decide(m)).collect(),
            None => Vec::new(),
        };
        // The classes each MSCC belongs to (its class of service; roaming).
        let roaming = ctx.as_ref().map_or_else(
            || {
                cr.attributes.serving.is_some()
                    && policy.roaming(cr.attributes.serving, route::imsi_home(cr))
            },
            |c| c.facts.roaming,
        );
        // The payer of the `i`th MSCC: cheap, so made where it is needed, not kept.
        let payer_of = |s: &Session, i: usize, m: &Mscc| {
            let classes = policy.classes_of(m.rating_group, m.service_identifier, roaming);
            let rule = rules.get(i).copied().flatten();
            self.payer(s, policy, ctx.as_ref(), (rule, classes), tariff)
        };
        // Every report is settled before anything is granted, so that no settlement can
        // return what this request has just granted.
        for (i, m) in cr.mscc.iter().enumerate() {
            let payer = payer_of(s, i, m);
            self.settle(s, m, tariff, &payer, now, rec);
        }
        if let Some(g) = &guards {
            self.note_velocity(s, g, cr.reported_octets(), now, rec);
        }
        // Blocked since the session began: what was reported is charged (above), nothing is
        // held or granted any more, and every service is denied.
        let blocked = !terminating && self.accounts.ledger().is_blocked(s.account);
        if blocked {
            rec.release_all(s, now);
        }
        // A grant never outlasts the rule that decided it.
        let validity_s = ctx
            .as_ref()
            .and_then(|c| c.edge)
            .map_or(policy.validity_time_s, |e| e.min(policy.validity_time_s));
        let mut answers = Vec::with_capacity(cr.mscc.len());
        // The accounts charged, for explain.
        let mut charged = [None; explain::KEPT_SERVICES];
        for (i, m) in cr.mscc.iter().enumerate() {
            let payer = &payer_of(s, i, m);
            if let Some(c) = charged.get_mut(i) {
                *c = Some(payer.account);
            }
            let mut a = MsccAnswer::new(m.rating_group, m.service_identifier, ResultCode::Success);
            if blocked {
                a.result = ResultCode::EndUserServiceDenied;
                a.why = Some(explain::why::BLOCKED);
            } else if let Some(why) = payer.denied {
                a.result = ResultCode::EndUserServiceDenied;
                a.why = Some(why);
            } else if m
                .rating_group
                .is_some_and(|rg| policy.denied_rating_groups.contains(&rg))
            {
                a.result = ResultCode::EndUserServiceDenied;
                a.why = Some(explain::why::POLICY_DENIES);
            } else if !terminating && !m.is_final() {
                self.grant(
                    s,
                    m,
                    policy,
                    payer,
                    (validity_s, guards.as_ref()),
                    now,
                    &mut a,
                    rec,
                );
            }
            answers.push(a);
        }
        if terminating {
            // Anything not reported is returned.
            rec.release_all(s, now);
            s.terminated = true;
            s.deadline = now + i64::from(self.linger_s.load(Relaxed));
        } else {
            s.deadline = now
                + i64::from(policy.validity_time_s)
                + i64::from(self.reservation_grace_s.load(Relaxed));
        }
        let cut = validity_s < policy.validity_time_s;
        self.note_decision(
            cr,
            (s, policy),
            ctx.as_ref(),
            &rules,
            &charged,
            &answers,
            cut,
            now,
            rec,
        );
        let result = command_result(&answers, cr.multiple_services);
        write_cca(
            identity,
            out,
            req,
            result,
            &answers,
            cr.multiple_services,
            &EventAnswer::default(),
        );
        Ok(())
    }

    /// Charges the usage an MSCC reports and returns what the session held for that service.
    /// Each reservation is settled on the account it was held on and in the unit it was
    /// granted in (octets against an octets grant, money at the tariff against a money grant),
    /// whatever the policy or the rules say now, so a policy changed mid-session neither leaks
    /// nor double-counts a reservation; usage that nothing was reserved for is charged where
    /// `payer` says (`tariff`: the session's own account's, see [`Self::tariff_for`]).
    pub(super) fn settle(
        &self,
        s: &mut Session,
        m: &Mscc,
        tariff: Option<(u128, u128)>,
        payer: &Payer,
        now: i64,
        rec: &mut Recorder,
    ) {
        let key = (m.rating_group, m.service_identifier);
        let mut held: Vec<Held> = Vec::new();
        s.held.retain(|h| {
            let mine = (h.rating_group, h.service_identifier) == key;
            if mine {
                held.push(h.clone());
            }
            !mine
        });
        let mut used = [0u64; 3];
        for u in &m.used {
            used[0] = used[0].saturating_add(u.units.octets().unwrap_or(0));
            used[1] = used[1].saturating_add(u64::from(u.units.time.unwrap_or(0)));
            used[2] = used[2].saturating_add(u.units.events.unwrap_or(0));
        }
        for (k, kind) in [Unit::Octets, Unit::Seconds, Unit::Events]
            .into_iter()
            .enumerate()
        {
            // The report is charged once, against the first reservation of its kind.
            let mut charged = used[k] == 0;
            for h in held.iter().filter(|h| service_kind(h.unit) == kind) {
                let account = h.account(s.account);
                if charged {
                    rec.release(h.id, account, (h.unit, h.classes), h.reserved, now);
                    continue;
                }
                charged = true;
                let price = h.route.as_ref().map_or(tariff, |r| r.price);
                let paid = h.route.as_deref();
                match (h.unit, price) {
                    (Unit::Money, Some(price)) => {
                        let money = rec.commit_rated(
                            h.id, account, h.classes, h.reserved, used[k], price, now,
                        );
                        s.charge(key, s.paid_by(paid), unit_index(Unit::Money), money);
                    }
                    (Unit::Money, None) => {
                        // The tariff is gone: the money goes back, the octets count as octets.
                        rec.release(h.id, account, (Unit::Money, h.classes), h.reserved, now);
                        rec.commit(0, account, (kind, h.classes), 0, used[k], now);
                    }
                    (unit, _) => {
                        rec.commit(h.id, account, (unit, h.classes), h.reserved, used[k], now)
                    }
                }
                s.charge(key, s.paid_by(paid), k, used[k]);
            }
            if !charged {
                let account = payer.account;
                let paid = payer.route.as_deref();
                match (kind, payer.price) {
                    (Unit::Octets, Some(price)) => {
                        let money =
                            rec.commit_rated(0, account, payer.classes, 0, used[k], price, now);
                        s.charge(key, s.paid_by(paid), unit_index(Unit::Money), money);
                    }
                    _ => rec.commit(0, account, (kind, payer.classes), 0, used[k], now),
                }
                s.charge(key, s.paid_by(paid), k, used[k]);
            }
        }
    }
}
